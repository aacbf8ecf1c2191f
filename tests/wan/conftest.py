"""Shared fixtures of the Wan plugin tests: the reference fixture directory and small DiT models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

DIT_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="session")
def wan_reference_dir(fixtures_dir: Path) -> Path:
    """The reference fixture directory (``tests/fixtures/wan_reference``)."""
    return fixtures_dir


def write_sharded_copy(single_dir: Path, target: Path, num_shards: int = 2) -> Path:
    """Write the released sharded layout of a single-file DiT directory (index JSON + N shard files).

    Keys go to shards in sorted order, cut where the running size passes each 1/N of the total, like
    diffusers' ``save_pretrained(max_shard_size=...)``; the index is ``{"metadata": {"total_size"},
    "weight_map"}`` with sorted keys, and ``config.json`` is copied beside it.
    """
    from safetensors.torch import load_file, save_file

    state = load_file(str(single_dir / DIT_WEIGHTS_NAME))
    total_size = sum(tensor.numel() * tensor.element_size() for tensor in state.values())
    shards: list[dict[str, torch.Tensor]] = [{} for _ in range(num_shards)]
    running = 0
    for name in sorted(state):
        shard_index = min(num_shards - 1, running * num_shards // total_size)
        shards[shard_index][name] = state[name]
        running += state[name].numel() * state[name].element_size()
    target.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for index, shard in enumerate(shards, start=1):
        file_name = f"diffusion_pytorch_model-{index:05d}-of-{num_shards:05d}.safetensors"
        save_file(shard, str(target / file_name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, file_name))
    index_json = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (target / f"{DIT_WEIGHTS_NAME}.index.json").write_text(json.dumps(index_json, indent=2, sort_keys=True))
    shutil.copyfile(single_dir / "config.json", target / "config.json")
    return target


@pytest.fixture(scope="session")
def dit_layout_dirs(wan_reference_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fixture DiT in both released layouts: ``single`` (stored) and ``sharded`` (made from it)."""
    single = wan_reference_dir / "dit" / "single"
    sharded = write_sharded_copy(single, tmp_path_factory.mktemp("dit_sharded"))
    return {"single": single, "sharded": sharded}


@pytest.fixture(scope="session")
def reference_dit(wan_reference_dir: Path):
    """The fixture DiT (dim 256, 2 heads, 2 layers) loaded from the single-file official layout."""
    from pusa_fw_wan import WanDiT

    return WanDiT.from_pretrained(wan_reference_dir / "dit" / "single")


def random_wan_config(**overrides):
    """A tiny config with the real head_dim 128 (so the RoPE split is 22/21/21)."""
    from pusa_fw_wan import WanConfig

    fields = {"dim": 256, "ffn_dim": 512, "num_heads": 2, "num_layers": 2, "text_dim": 64, "freq_dim": 256}
    fields.update(overrides)
    return WanConfig(**fields)


def randomise_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter a random non-zero value (like the fixtures: nothing zero-initialised)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                values = 0.05 * torch.randn(parameter.shape, generator=generator)
            elif "norm" in name:
                values = 1 + 0.1 * torch.randn(parameter.shape, generator=generator)
            elif name.endswith("modulation"):
                values = torch.randn(parameter.shape, generator=generator) / parameter.shape[-1] ** 0.5
            else:
                fan_in = parameter[0].numel() if parameter.ndim > 1 else parameter.numel()
                values = torch.randn(parameter.shape, generator=generator) / fan_in**0.5
            parameter.copy_(values.to(parameter.dtype))
    return model


@pytest.fixture()
def make_random_dit():
    """Factory: ``make_random_dit(seed=0, **config_overrides) -> WanDiT`` with every parameter random."""
    from pusa_fw_wan import WanDiT

    def make(seed: int = 0, **overrides):
        return randomise_(WanDiT(random_wan_config(**overrides)), seed).eval()

    return make


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prompt and file-hash caches go to a temporary directory, never to the home directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg_cache"))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random Wan set on disk (DiT, VAE, umT5, tokenizer), shared by the pipeline and CLI tests."""
    from pusa_fw_wan.testing.tiny import build_tiny_wan

    return build_tiny_wan(tmp_path_factory.mktemp("tiny_wan"))
