"""Parity of `WanDiT` with diffusers' `WanTransformer3DModel` (test-only dependency), same random weights.

Diffusers computes the timestep sinusoid in fp32 (the official code: fp64), which alone moves the output
by ~1e-5 (wan_reference.md §7), so the bound here is 5e-5. Loading the diffusers ``transformer/``
directory written by ``save_pretrained`` exercises the diffusers -> official key mapping.
"""

from __future__ import annotations

from pathlib import Path

import diffusers
import pytest
import torch
import torch.nn.functional as F

from pusa_fw_wan import WanDiT
from pusa_fw_wan.dit.key_mapping import diffusers_to_official, official_to_diffusers

TOLERANCE = 5e-5
TEXT_ROWS = 13


def _diffusers_model(ours: WanDiT):
    config = ours.config
    reference = diffusers.WanTransformer3DModel(**config.to_diffusers_kwargs())
    converted = {official_to_diffusers(name): tensor for name, tensor in ours.state_dict().items()}
    reference.load_state_dict(converted, strict=True)
    return reference.eval()


@pytest.fixture(scope="module")
def models() -> tuple[WanDiT, object]:
    from pusa_fw_wan.dit.config import WanConfig

    ours = WanDiT(WanConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2, text_dim=64))
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, parameter in ours.named_parameters():
            scale = (
                0.05
                if name.endswith("bias")
                else (parameter[0].numel() if parameter.ndim > 1 else 64) ** -0.5
            )
            offset = 1.0 if "norm" in name else 0.0
            parameter.copy_(offset + scale * torch.randn(parameter.shape, generator=generator))
    return ours.eval(), _diffusers_model(ours)


@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    latents = torch.randn(2, 16, 3, 6, 10, generator=generator)
    context = torch.randn(2, TEXT_ROWS, 64, generator=generator)
    return {
        "latents": latents,
        "context": context,
        "padded_context": F.pad(context, (0, 0, 0, 512 - TEXT_ROWS)),
    }


def test_key_mapping_is_a_bijection_on_the_model_keys(models: tuple[WanDiT, object]) -> None:
    ours, reference = models
    official = list(ours.state_dict())
    mapped = [official_to_diffusers(name) for name in official]
    assert sorted(mapped) == sorted(reference.state_dict())
    assert [diffusers_to_official(name) for name in mapped] == official


def test_scalar_timestep_matches_diffusers(models, inputs) -> None:
    ours, reference = models
    timesteps = torch.tensor([999.0, 37.5])
    with torch.no_grad():
        expected = reference(inputs["latents"], timesteps, inputs["padded_context"], return_dict=False)[0]
        got = ours.forward_timesteps(inputs["latents"], timesteps, inputs["context"])
    error = (got - expected).abs().max().item()
    assert error <= TOLERANCE, f"max-abs vs diffusers (scalar timestep): {error}"
    assert expected.abs().max().item() > 0.5  # the comparison is not between two near-zero tensors


def test_per_frame_timesteps_match_diffusers_per_token_path(models, inputs) -> None:
    ours, reference = models
    frame_timesteps = torch.tensor([[999.0, 500.0, 0.0], [1000.0, 0.0, 312.625]])
    tokens_per_frame = (6 // 2) * (10 // 2)
    token_timesteps = frame_timesteps.repeat_interleave(tokens_per_frame, dim=1)  # [B, L], frame-major
    with torch.no_grad():
        expected = reference(inputs["latents"], token_timesteps, inputs["padded_context"], return_dict=False)[
            0
        ]
        got = ours.forward_timesteps(inputs["latents"], frame_timesteps, inputs["context"])
    error = (got - expected).abs().max().item()
    assert error <= TOLERANCE, f"max-abs vs diffusers (per-token [B, L] timesteps): {error}"


def test_loads_diffusers_transformer_directory(models, inputs, tmp_path: Path) -> None:
    ours, reference = models
    reference.save_pretrained(tmp_path / "transformer")
    loaded = WanDiT.from_pretrained(tmp_path)  # a pipeline root holding transformer/
    assert loaded.config == ours.config
    original = ours.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    timesteps = torch.tensor([[999.0, 500.0, 0.0], [3.0, 2.0, 1.0]])
    with torch.no_grad():
        assert torch.equal(
            loaded.forward_timesteps(inputs["latents"], timesteps, inputs["context"]),
            ours.forward_timesteps(inputs["latents"], timesteps, inputs["context"]),
        )
