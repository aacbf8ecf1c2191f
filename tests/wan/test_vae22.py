"""The Wan2.2 VAE against the official ``Wan2_2_VAE`` outputs (fixture cases V1 video, V2 image), its loading
from ``.pth`` / safetensors, detection from the keys, geometry and input checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pusa_fw.errors import CheckpointError, InputError
from pusa_fw.geometry import LatentGeometry
from pusa_fw_wan import WanVAE
from pusa_fw_wan.vae import Wan22VAE
from pusa_fw_wan.vae.checkpoint import WAN22_LATENTS_MEAN, WAN22_LATENTS_STD, detect_vae_version

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
WAN22_VAE = FIXTURES / "wan22_reference" / "vae"
TINY = WAN22_VAE / "wan22_vae_tiny.safetensors"
CASES = {"V1 video": ("vae_video_io.safetensors", "video"), "V2 image": ("vae_image_io.safetensors", "image")}

# Fixture README's suggested pass thresholds (fp32 max-abs). Measured here (1 thread, x86): V1 mu 1.03e-6,
# latent 2.62e-6, recon_unclamped 3.46e-6, recon 3.19e-6; V2 mu 1.43e-6, latent 2.62e-6, recon_unclamped
# 1.67e-6, recon 1.67e-6 (the README's fp32-vs-fp64 floors: 0.9e-6 .. 3.5e-6).
LIMITS = {"mu": 5e-6, "latent": 1e-5, "recon_unclamped": 1e-5, "recon": 1e-5}


@pytest.fixture(scope="module")
def vae22(one_thread: None) -> WanVAE:
    return WanVAE.from_pretrained(TINY, dim=8)


def _case(name: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    file_name, input_name = CASES[name]
    io = load_file(str(WAN22_VAE / file_name))
    return io, io[input_name]


def _max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape, f"shape {list(actual.shape)} != reference {list(expected.shape)}"
    return (actual - expected).abs().max().item()


def test_loads_as_the_wan22_vae_with_its_geometry(vae22: WanVAE) -> None:
    assert isinstance(vae22, Wan22VAE) and vae22.version == "2.2"
    assert (vae22.arch.dim, vae22.arch.decoder_dim, vae22.arch.z_dim) == (8, 12, 48)
    assert vae22.geometry == LatentGeometry(spatial_factor=16, channels=48)
    assert vae22.geometry.spatial_multiple == 32 and vae22.geometry.num_latent_frames(121) == 31


def test_normalisation_constants_are_the_official_fp32_ones(vae22: WanVAE) -> None:
    io, _ = _case("V1 video")
    assert vae22.latents_mean == WAN22_LATENTS_MEAN and len(WAN22_LATENTS_MEAN) == 48
    mean, inv_std = vae22._scale(torch.device("cpu"))
    assert torch.equal(mean.flatten(), io["latent_mean"])
    assert torch.equal(torch.tensor(WAN22_LATENTS_STD), io["latent_std"])
    assert torch.equal(inv_std.flatten(), io["latent_inv_std"])  # decode divides by this fp32 reciprocal


@pytest.mark.parametrize("case", sorted(CASES))
def test_encode_matches_official_mu_and_latent(vae22: WanVAE, case: str) -> None:
    io, pixels = _case(case)
    errors = {
        "mu": _max_error(vae22.encode(pixels, normalize=False, tiled=False), io["mu"]),
        "latent": _max_error(vae22.encode(pixels, tiled=False), io["latent"]),
    }
    for name, error in errors.items():
        assert error <= LIMITS[name], f"{case} {name} max error {error:.3e} > {LIMITS[name]}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_decode_matches_official_recon(vae22: WanVAE, case: str) -> None:
    io, _ = _case(case)
    unclamped = vae22.decode(io["latent"], clamp=False, tiled=False)
    recon = vae22.decode(io["latent"], tiled=False)
    errors = {
        "recon_unclamped": _max_error(unclamped, io["recon_unclamped"]),
        "recon": _max_error(recon, io["recon"]),
    }
    for name, error in errors.items():
        assert error <= LIMITS[name], f"{case} {name} max error {error:.3e} > {LIMITS[name]}"
    # The clamp acts on both references, so the unclamped comparison is the strict one.
    assert unclamped.abs().max() > 1.5 and recon.abs().max() <= 1.0


def test_encode_image_is_the_one_frame_video(vae22: WanVAE) -> None:
    io, image = _case("V2 image")
    latent = vae22.encode_image(image[:, :, 0], tiled=False)
    assert torch.equal(latent, vae22.encode(image, tiled=False))
    assert _max_error(latent, io["latent"]) <= LIMITS["latent"]


def test_encode_and_decode_are_causal(vae22: WanVAE) -> None:
    """Latent frame 0 depends on pixel frame 0 only; decoding a prefix gives the prefix of the full decode."""
    io, video = _case("V1 video")
    full = vae22.encode(video, tiled=False)
    assert torch.equal(vae22.encode(video[:, :, :1], tiled=False), full[:, :, :1])
    decoded = vae22.decode(io["latent"], clamp=False, tiled=False)
    prefix = vae22.decode(io["latent"][:, :, :2], clamp=False, tiled=False)
    assert prefix.shape[2] == 5 and torch.equal(prefix, decoded[:, :, :5])


def test_pth_and_safetensors_load_the_same_model(vae22: WanVAE, tmp_path: Path) -> None:
    """The release ships ``Wan2.2_VAE.pth``, a plain state dict read with ``weights_only=True``."""
    state = load_file(str(TINY))
    path = tmp_path / "Wan2.2_VAE.pth"
    torch.save(state, path)
    assert set(torch.load(path, weights_only=True)) == set(state)
    from_pth = WanVAE.from_pretrained(path, dim=None, z_dim=None)
    assert isinstance(from_pth, Wan22VAE)
    for name, tensor in from_pth.state_dict().items():
        assert torch.equal(tensor, vae22.state_dict()[name]), name
    io, video = _case("V1 video")
    assert torch.equal(from_pth.encode(video, tiled=False), vae22.encode(video, tiled=False))


def test_released_widths_are_expected_by_default() -> None:
    with pytest.raises(CheckpointError, match=r"dim=8, but dim=160 was requested; pass dim=8"):
        WanVAE.from_pretrained(TINY)
    with pytest.raises(CheckpointError, match=r"z_dim=48, but z_dim=16 was requested"):
        WanVAE.from_pretrained(TINY, dim=8, z_dim=16)


def test_weights_dtype_option(one_thread: None) -> None:
    vae = WanVAE.from_pretrained(TINY, dim=8, dtype=torch.bfloat16)
    assert vae.dtype == torch.bfloat16
    io, image = _case("V2 image")
    latent = vae.encode(image, tiled=False)
    assert latent.dtype == torch.float32 and latent.shape == io["latent"].shape


def test_a_wan21_file_still_loads_as_wan21() -> None:
    path = FIXTURES / "wan_reference" / "vae" / "wan_vae_tiny.safetensors"
    vae = WanVAE.from_pretrained(path, dim=8)
    assert type(vae) is WanVAE and vae.version == "2.1"
    assert vae.geometry == LatentGeometry(spatial_factor=8, channels=16)
    with pytest.raises(CheckpointError, match="holds a Wan2.1 VAE, not what Wan22VAE loads"):
        Wan22VAE.from_pretrained(path, dim=8)


def test_detection_reads_the_keys() -> None:
    state = load_file(str(TINY))
    assert detect_vae_version(state, "x") == "2.2"
    assert detect_vae_version({"encoder.conv1.weight": torch.zeros(8, 12, 3, 3, 3)}, "x") == "2.2"
    assert detect_vae_version({"encoder.conv1.weight": torch.zeros(8, 3, 3, 3, 3)}, "x") == "2.1"


def test_a_file_that_is_neither_vae_is_refused_in_one_line() -> None:
    dit = FIXTURES / "wan22_reference" / "dit" / "single" / "diffusion_pytorch_model.safetensors"
    dit = dit if dit.is_file() else FIXTURES / "wan_reference" / "dit" / "single" / dit.name
    with pytest.raises(CheckpointError, match="is neither a Wan2.1 nor a Wan2.2 VAE") as error:
        WanVAE.from_pretrained(dit)
    assert "\n" not in str(error.value) and "Wan2.2_VAE.pth" in str(error.value)


def test_an_incomplete_wan22_file_lists_its_keys(tmp_path: Path) -> None:
    state = load_file(str(TINY))
    del state["decoder.upsamples.0.upsamples.3.time_conv.bias"]
    path = tmp_path / "cut.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match="the Wan2.2 VAE") as error:
        WanVAE.from_pretrained(path, dim=8)
    assert "missing keys (1): decoder.upsamples.0.upsamples.3.time_conv.bias" in str(error.value)


@pytest.mark.parametrize(
    ("shape", "pattern"),
    [
        ((1, 4, 5, 32, 32), r"video must be a tensor \[B, 3, T, H, W\]"),
        ((1, 3, 8, 32, 32), r"T=8 frames; T must be 4n\+1, e.g. 5 or 9"),
        ((1, 3, 5, 24, 32), r"H=24; it must be a positive multiple of 16 \(the Wan pipelines need 32\)"),
        ((1, 3, 5, 32, 40), r"W=40; it must be a positive multiple of 16"),
    ],
)
def test_bad_videos_are_refused_in_one_line(vae22: WanVAE, shape: tuple[int, ...], pattern: str) -> None:
    with pytest.raises(InputError, match=pattern) as error:
        vae22.encode(torch.zeros(shape))
    assert "\n" not in str(error.value)


def test_bad_latents_are_refused_in_one_line(vae22: WanVAE) -> None:
    with pytest.raises(InputError, match=r"latents must be a tensor \[B, 48, F, h, w\]") as error:
        vae22.decode(torch.zeros(1, 16, 2, 4, 4))
    assert "\n" not in str(error.value)
