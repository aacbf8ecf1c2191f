"""Shared fixtures of the Wan plugin tests: the reference fixture directory and small DiT models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# tests/wan/conftest.py -> parents[2] is the repo root; CI clones the repo with `shared/` beside it.
WAN_REFERENCE_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "wan_reference"
DIT_DIR = WAN_REFERENCE_DIR / "dit"


@pytest.fixture(scope="session")
def wan_reference_dir() -> Path:
    """The ``shared/fixtures/wan_reference`` directory (fails loudly when it is absent)."""
    assert WAN_REFERENCE_DIR.is_dir(), f"reference fixtures not found at {WAN_REFERENCE_DIR}"
    return WAN_REFERENCE_DIR


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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors run fastest on one thread (and do not fight other processes for cores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prompt and file-hash caches go to a temporary directory, never to the home directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg_cache"))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random Wan set on disk (DiT, VAE, umT5, tokenizer), shared by the pipeline and CLI tests."""
    from pusa_fw_wan.testing.tiny import build_tiny_wan

    return build_tiny_wan(tmp_path_factory.mktemp("tiny_wan"))
