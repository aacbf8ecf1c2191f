"""Shared fixtures of the toy-plugin tests: small toy model directories and random VTA LoRA files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def toy_one_thread():
    """Tiny tensors run fastest on one thread (and leave the other cores to other work)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight toy model directory (stride-1 codec, 9-frame 16x16 world, DiT dim 32 x 2 layers)."""
    from pusa_fw_toy.model_dir import build_toy_dir

    return build_toy_dir(tmp_path_factory.mktemp("toy") / "model", randomise=True, seed=3, dim=32,
                         num_heads=2, num_layers=2, freq_dim=32)


def write_random_lora(dit: torch.nn.Module, path: Path, *, rank: int = 2, seed: int = 0,
                      targets: tuple[str, ...] = ("self_attn.q", "self_attn.v", "ffn.0")) -> Path:
    """A LoRA file in the trained-checkpoint format (``<module>.lora_A.weight`` [r, in], ``lora_B`` [out, r])."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in dit.named_modules():
        if isinstance(module, torch.nn.Linear) and any(name.endswith(target) for target in targets):
            tensors[f"{name}.lora_A.weight"] = torch.randn(rank, module.in_features, generator=generator) * 0.1
            tensors[f"{name}.lora_B.weight"] = torch.randn(module.out_features, rank, generator=generator) * 0.1
    metadata = {"format": "pusa-fw-lora", "rank": str(rank), "alpha": str(rank), "targets": json.dumps(targets)}
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.fixture(scope="session")
def toy_loras(toy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two random LoRA files for the toy DiT (two 'training seeds' of a VTA stage)."""
    from pusa_fw_toy.model_dir import load_toy_models

    dit = load_toy_models(toy_dir).dit
    folder = tmp_path_factory.mktemp("toy_loras")
    return [write_random_lora(dit, folder / f"vta-{seed}.safetensors", seed=seed) for seed in (0, 1)]
