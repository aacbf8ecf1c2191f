"""Spatial tiling and the memory budget of the Wan2.2 VAE (cells of 16x16 pixels)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pusa_fw_wan import WanVAE
from pusa_fw_wan.vae import Wan22VAE

TINY = Path(__file__).resolve().parents[1] / "fixtures" / "wan22_reference" / "vae" / "wan22_vae_tiny.safetensors"

# Tiled vs untiled on the fixture VAE (random weights: every position depends on far-away context, a worst
# case), 10x12 latents = 160x192 pixels in 2x3 = 6 tiles of 6 latents overlapping by >= 2. Measured on seeds
# 0..3: decode max 1.30 .. 1.75, mean 0.137 .. 0.149 (outputs up to 2.5 .. 3.0); encode max 1.55 .. 1.72,
# mean 0.115 .. 0.117 (latents up to 4.0 .. 4.8). Bounds ~1.3x the worst; the tests run seed 0.
DECODE_MAX, DECODE_MEAN = 2.3, 0.2
ENCODE_MAX, ENCODE_MEAN = 2.3, 0.16


@pytest.fixture(scope="module")
def tiled_vae22(one_thread: None) -> WanVAE:
    return WanVAE.from_pretrained(TINY, dim=8, tile_size=6, tile_overlap=2)


def test_one_tile_equals_untiled_exactly(tiled_vae22: WanVAE) -> None:
    latents = torch.randn(1, 48, 2, 3, 4, generator=torch.Generator().manual_seed(0))
    plan = tiled_vae22.tile_plan(48, 64, "decode", tiled=True)
    assert plan is not None and plan.num_tiles == 1
    assert torch.equal(tiled_vae22.decode(latents, tiled=True), tiled_vae22.decode(latents, tiled=False))


def test_tiled_decode_error_is_bounded(tiled_vae22: WanVAE) -> None:
    latents = torch.randn(1, 48, 2, 10, 12, generator=torch.Generator().manual_seed(0))
    assert tiled_vae22.tile_plan(160, 192, "decode", tiled=True).num_tiles == 6
    untiled = tiled_vae22.decode(latents, tiled=False, clamp=False)
    tiled = tiled_vae22.decode(latents, tiled=True, clamp=False)
    error = (tiled - untiled).abs()
    message = f"tiled decode error max {error.max():.4f} mean {error.mean():.4f}"
    assert tiled.shape == untiled.shape == (1, 3, 5, 160, 192)
    assert 0 < error.max() <= DECODE_MAX and error.mean() <= DECODE_MEAN, message


def test_tiled_encode_error_is_bounded(tiled_vae22: WanVAE) -> None:
    video = torch.rand(1, 3, 5, 160, 192, generator=torch.Generator().manual_seed(0)) * 2 - 1
    untiled = tiled_vae22.encode(video, tiled=False)
    tiled = tiled_vae22.encode(video, tiled=True)
    error = (tiled - untiled).abs()
    message = f"tiled encode error max {error.max():.4f} mean {error.mean():.4f}"
    assert tiled.shape == untiled.shape == (1, 48, 2, 10, 12)
    assert 0 < error.max() <= ENCODE_MAX and error.mean() <= ENCODE_MEAN, message


def test_budget_switches_tiling_on(one_thread: None) -> None:
    roomy = WanVAE.from_pretrained(TINY, dim=8)
    budget = roomy.estimate_bytes(128, 192) / 2
    tight = WanVAE.from_pretrained(TINY, dim=8, memory_budget_bytes=budget, tile_overlap=1)
    assert roomy.tile_plan(128, 192) is None
    plan = tight.tile_plan(128, 192)
    assert plan is not None and plan.num_tiles > 1
    assert tight.estimate_bytes(plan.tile_height * 16, plan.tile_width * 16) <= budget
    latents = torch.randn(1, 48, 1, 8, 12, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tight.decode(latents), tight.decode(latents, tiled=True))
    assert not torch.equal(tight.decode(latents), roomy.decode(latents))


@pytest.mark.parametrize(("height", "width"), [(704, 1280), (1088, 1920)])
def test_default_budget_bounds_the_released_vae(height: int, width: int) -> None:
    """With the release widths (160 / 256) every tile of a 720p / 1080p decode fits the default budget."""
    with torch.device("meta"):
        vae = Wan22VAE()
    plan = vae.tile_plan(height, width)
    assert plan is not None, "the default budget should tile these sizes"
    assert vae.estimate_bytes(height, width) > vae.memory_budget_bytes
    assert vae.estimate_bytes(plan.tile_height * 16, plan.tile_width * 16) <= vae.memory_budget_bytes
    assert plan.tile_height > 2 * vae.tile_overlap and plan.tile_width > 2 * vae.tile_overlap


def test_default_budget_keeps_480p_and_encodes_exact() -> None:
    """480x832 decodes untiled (like the official code); encodes stay untiled up to 720p."""
    with torch.device("meta"):
        vae = Wan22VAE()
    assert vae.tile_plan(480, 832) is None
    assert vae.tile_plan(704, 1280, "encode") is None
    assert vae.tile_plan(480, 832, tiled=True) is not None
