"""The registered backbone factories load real (tiny) checkpoints by name."""

from __future__ import annotations

from pathlib import Path

import torch

from pusa_fw.plugins import get_registry
from pusa_fw_wan.dit.config import WanConfig
from pusa_fw_wan.dit.model import WanDiT
from pusa_fw_wan.dit.experts import WanExpertsBackbone
from pusa_fw_wan.testing.tiny import randomise_parameters


def save_tiny(directory: Path, seed: int) -> WanDiT:
    config = WanConfig(dim=32, num_heads=2, num_layers=1, ffn_dim=64, freq_dim=32, text_dim=16)
    model = randomise_parameters(WanDiT(config), torch.Generator().manual_seed(seed))
    directory.mkdir()
    (directory / "config.json").write_text(__import__("json").dumps(config.to_official_json()))
    from safetensors.torch import save_file

    save_file(model.state_dict(), str(directory / "diffusion_pytorch_model.safetensors"))
    return model


def test_factories_load_by_name(tmp_path: Path) -> None:
    registry = get_registry()
    high = save_tiny(tmp_path / "high", 1)
    low = save_tiny(tmp_path / "low", 2)
    latents = torch.randn(1, 16, 2, 4, 4)
    context = torch.randn(1, 5, 16)
    single = registry.get("backbones", "wan2.1-t2v").load(tmp_path / "high")
    assert isinstance(single, WanDiT)
    sigmas = torch.tensor([[0.5, 0.3]])
    torch.testing.assert_close(single.velocity(latents, sigmas, context), high.velocity(latents, sigmas, context))
    experts = registry.get("backbones", "wan2.2-a14b").load(tmp_path / "high", tmp_path / "low")
    assert isinstance(experts, WanExpertsBackbone)
    noisy, clean = torch.tensor([[0.95, 0.9]]), torch.tensor([[0.5, 0.0]])
    torch.testing.assert_close(experts.velocity(latents, noisy, context), high.velocity(latents, noisy, context))
    torch.testing.assert_close(experts.velocity(latents, clean, context), low.velocity(latents, clean, context))


def test_load_backbone_is_the_public_way_to_a_registered_factory(tmp_path: Path) -> None:
    import pytest

    import pusa_fw
    from pusa_fw.errors import UnknownComponentError
    from pusa_fw.geometry import WAN21_GEOMETRY

    saved = save_tiny(tmp_path / "dit", 3)
    loaded = pusa_fw.load_backbone("wan2.1-t2v", tmp_path / "dit", dtype=torch.float32)
    assert isinstance(loaded, WanDiT)
    assert all(torch.equal(value, saved.state_dict()[key]) for key, value in loaded.state_dict().items())
    assert get_registry().get("backbones", "wan2.1-t2v").geometry == WAN21_GEOMETRY
    with pytest.raises(UnknownComponentError, match="unknown backbone 'wan2.1-t2x'.*'wan2.1-t2v'"):
        pusa_fw.load_backbone("wan2.1-t2x", tmp_path / "dit")
