"""Wan-VAE numbers against the official implementation (fixture case 3) and diffusers' AutoencoderKLWan."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pusa_fw_wan import WanVAE
from pusa_fw_wan.vae.checkpoint import diffusers_key

FP32_LIMIT = 1e-5  # README: measured floor 1.2e-6 (encode) / 3.0e-6 (decode), hard limit 1e-5


def randomise_vae_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fixture-like random weights: convs ~ N(0, 1/fan_in), biases ~ N(0, 0.02^2), gammas ~ 1 + N(0, 0.1^2)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if name.endswith("gamma"):
                values = 1 + 0.1 * noise
            elif name.endswith("bias"):
                values = 0.02 * noise
            else:
                values = noise / parameter[0].numel() ** 0.5
            parameter.copy_(values)
    return model


@pytest.fixture(scope="module")
def vae_io(wan_reference_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(wan_reference_dir / "vae" / "vae_io.safetensors"))


@pytest.fixture(scope="module")
def fixture_vae(wan_reference_dir: Path) -> WanVAE:
    return WanVAE.from_pretrained(wan_reference_dir / "vae" / "wan_vae_tiny.safetensors", dim=8)


def _max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape, f"shape {list(actual.shape)} != reference {list(expected.shape)}"
    return (actual - expected).abs().max().item()


def test_normalisation_constants_are_the_official_ones(fixture_vae: WanVAE, vae_io: dict) -> None:
    assert torch.equal(torch.tensor(fixture_vae.latents_mean), vae_io["latent_mean"])
    assert torch.equal(torch.tensor(fixture_vae.latents_std), vae_io["latent_std"])


def test_encode_matches_official_mu_and_latent(fixture_vae: WanVAE, vae_io: dict) -> None:
    mu = fixture_vae.encode(vae_io["video"], normalize=False, tiled=False)
    latent = fixture_vae.encode(vae_io["video"], tiled=False)
    mu_error, latent_error = _max_error(mu, vae_io["mu"]), _max_error(latent, vae_io["latent"])
    assert mu_error <= FP32_LIMIT, f"encode mu max error {mu_error:.3e} > {FP32_LIMIT}"
    assert latent_error <= FP32_LIMIT, f"encode latent max error {latent_error:.3e} > {FP32_LIMIT}"


def test_decode_matches_official_recon(fixture_vae: WanVAE, vae_io: dict) -> None:
    unclamped = fixture_vae.decode(vae_io["latent"], clamp=False, tiled=False)
    recon = fixture_vae.decode(vae_io["latent"], tiled=False)
    unclamped_error = _max_error(unclamped, vae_io["recon_unclamped"])
    recon_error = _max_error(recon, vae_io["recon"])
    assert unclamped_error <= FP32_LIMIT, (
        f"decode recon_unclamped max error {unclamped_error:.3e} > {FP32_LIMIT}"
    )
    assert recon_error <= FP32_LIMIT, f"decode recon max error {recon_error:.3e} > {FP32_LIMIT}"
    # The clamp really acts on this reference (8% of values), so the unclamped check is the strict one.
    assert unclamped.abs().max() > 1.5 and recon.abs().max() <= 1.0


def test_decode_is_causal_frame_by_frame(fixture_vae: WanVAE, vae_io: dict) -> None:
    """Decoding the first k latents gives exactly the first 4(k-1)+1 frames of the full decode."""
    full = fixture_vae.decode(vae_io["latent"], clamp=False, tiled=False)
    prefix = fixture_vae.decode(vae_io["latent"][:, :, :2], clamp=False, tiled=False)
    assert prefix.shape[2] == 5
    assert torch.equal(prefix, full[:, :, :5])


def test_encode_image_is_a_one_frame_video(fixture_vae: WanVAE, vae_io: dict) -> None:
    image = vae_io["video"][:, :, 0]
    from_image = fixture_vae.encode_image(image, tiled=False)
    from_video = fixture_vae.encode(vae_io["video"], tiled=False)
    assert from_image.shape == (1, 16, 1, 4, 6)
    # Latent 0 of a video only sees pixel frame 0 (causal), so it equals the image latent.
    error = _max_error(from_image, from_video[:, :, :1])
    assert error <= 1e-6, f"image latent differs from the video's first latent by {error:.3e}"


@pytest.fixture(scope="module")
def diffusers_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, WanVAE]:
    """A random diffusers AutoencoderKLWan (base_dim 8) saved with save_pretrained and loaded through our mapping."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    reference = randomise_vae_(AutoencoderKLWan(base_dim=8, z_dim=16), seed=3).eval()
    directory = tmp_path_factory.mktemp("diffusers_vae") / "vae"
    reference.save_pretrained(directory)
    return reference, WanVAE.from_pretrained(directory, dim=8)


def test_diffusers_mapping_covers_every_tensor(diffusers_pair) -> None:
    reference, ours = diffusers_pair
    ours_state, theirs = ours.state_dict(), reference.state_dict()
    mapped = {diffusers_key(key, ours.arch): key for key in ours_state}
    assert set(mapped) == set(theirs), "mapping does not produce exactly diffusers' key set"
    for name, key in mapped.items():
        assert torch.equal(ours_state[key], theirs[name]), f"{key} <- {name} differs"


def test_diffusers_encode_and_decode_parity(diffusers_pair) -> None:
    reference, ours = diffusers_pair
    generator = torch.Generator().manual_seed(1)
    video = torch.rand(1, 3, 9, 32, 40, generator=generator) * 2 - 1
    with torch.no_grad():
        expected_mu = reference.encode(video).latent_dist.mode()
        raw = torch.randn(1, 16, 3, 4, 5, generator=generator)
        expected_video = reference.decode(raw).sample
    mu = ours.encode(video, normalize=False, tiled=False)
    decoded = ours.decode(raw, normalized=False, tiled=False)
    encode_error, decode_error = _max_error(mu, expected_mu), _max_error(decoded, expected_video)
    assert encode_error <= FP32_LIMIT, f"encode vs diffusers max error {encode_error:.3e}"
    assert decode_error <= FP32_LIMIT, f"decode vs diffusers max error {decode_error:.3e}"
    # The pipelines' normalisation (z - mean) * (1 / std) with the config constants is what encode returns.
    mean = torch.tensor(reference.config.latents_mean).view(1, 16, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(reference.config.latents_std).view(1, 16, 1, 1, 1)
    normalised_error = _max_error(ours.encode(video, tiled=False), (expected_mu - mean) * inv_std)
    assert normalised_error <= FP32_LIMIT, f"normalised encode vs diffusers max error {normalised_error:.3e}"


def test_batch_items_are_independent(fixture_vae: WanVAE) -> None:
    """A batch of two encodes/decodes like the two items one by one (the official code runs batch 1).

    Only fp32 rounding differs (conv kernels pick other summation orders for batch 2): measured 1.7e-5 max
    on the decode (outputs up to ~2), below 1e-6 on the encode.
    """
    video = torch.rand(2, 3, 5, 16, 24, generator=torch.Generator().manual_seed(2)) * 2 - 1
    latents = fixture_vae.encode(video, tiled=False)
    decoded = fixture_vae.decode(latents, tiled=False)
    for item in range(2):
        single = fixture_vae.encode(video[item : item + 1], tiled=False)
        torch.testing.assert_close(latents[item : item + 1], single, rtol=0, atol=1e-6)
        torch.testing.assert_close(
            decoded[item : item + 1], fixture_vae.decode(single, tiled=False), rtol=0, atol=5e-5
        )
