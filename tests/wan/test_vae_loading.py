"""Loading the Wan-VAE from .pth / safetensors / diffusers directories, and the errors for bad files and inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pusa_fw.errors import CheckpointError, InputError, PusaError
from pusa_fw_wan import WanVAE
from pusa_fw_wan.vae.checkpoint import diffusers_key


@pytest.fixture(scope="module")
def tiny_state(wan_reference_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(wan_reference_dir / "vae" / "wan_vae_tiny.safetensors"))


@pytest.fixture(scope="module")
def tiny_vae(wan_reference_dir: Path) -> WanVAE:
    return WanVAE.from_pretrained(wan_reference_dir / "vae" / "wan_vae_tiny.safetensors", dim=8)


def _assert_same_weights(model: WanVAE, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key, tensor in state.items():
        assert torch.equal(loaded[key], tensor), key


def test_load_pth_plain_state_dict(tmp_path: Path, tiny_state: dict) -> None:
    path = tmp_path / "Wan2.1_VAE.pth"
    torch.save(dict(tiny_state), path)
    _assert_same_weights(WanVAE.from_pretrained(path, dim=8), tiny_state)


def test_load_pth_wrapped_in_model_state(tmp_path: Path, tiny_state: dict) -> None:
    path = tmp_path / "wrapped.pth"
    torch.save({"model_state": dict(tiny_state)}, path)
    _assert_same_weights(WanVAE.from_pretrained(path, dim=8), tiny_state)


def test_load_safetensors_and_read_widths(tiny_state: dict, wan_reference_dir: Path) -> None:
    model = WanVAE.from_pretrained(
        wan_reference_dir / "vae" / "wan_vae_tiny.safetensors", dim=None, z_dim=None
    )
    assert model.arch.dim == 8 and model.arch.z_dim == 16
    _assert_same_weights(model, tiny_state)


def test_load_diffusers_directory_and_model_root(tmp_path: Path, tiny_state: dict, tiny_vae: WanVAE) -> None:
    vae_dir = tmp_path / "model" / "vae"
    vae_dir.mkdir(parents=True)
    save_file(
        {diffusers_key(k, tiny_vae.arch): v.contiguous() for k, v in tiny_state.items()},
        str(vae_dir / "diffusion_pytorch_model.safetensors"),
    )
    config = {
        "_class_name": "AutoencoderKLWan",
        "base_dim": 8,
        "z_dim": 16,
        "dim_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "attn_scales": [],
        "temperal_downsample": [False, True, True],
        "latents_mean": list(tiny_vae.latents_mean),
        "latents_std": list(tiny_vae.latents_std),
    }
    (vae_dir / "config.json").write_text(json.dumps(config))
    _assert_same_weights(WanVAE.from_pretrained(vae_dir, dim=8), tiny_state)
    _assert_same_weights(WanVAE.from_pretrained(vae_dir.parent, dim=8), tiny_state)  # model root with vae/
    config["temperal_downsample"] = [True, True, False]
    (vae_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="temperal_downsample"):
        WanVAE.from_pretrained(vae_dir, dim=8)


def test_dtype_option_converts_weights(wan_reference_dir: Path) -> None:
    model = WanVAE.from_pretrained(
        wan_reference_dir / "vae" / "wan_vae_tiny.safetensors", dim=8, dtype=torch.bfloat16
    )
    assert model.dtype == torch.bfloat16
    latents = model.encode(torch.zeros(1, 3, 1, 16, 16), tiled=False)
    assert latents.dtype == torch.float32 and torch.isfinite(latents).all()


def test_missing_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        WanVAE.from_pretrained(tmp_path / "nope.pth")


@pytest.mark.parametrize("name", ["broken.pth", "broken.safetensors"])
def test_unreadable_file_is_a_checkpoint_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="cannot read"):
        WanVAE.from_pretrained(path)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pth"
    torch.save({"encoder.conv1.weight": torch.zeros(1), "extra": object()}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        WanVAE.from_pretrained(path)


def test_wrong_extension_is_named(tmp_path: Path) -> None:
    path = tmp_path / "weights.npz"
    path.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown extension '.npz'"):
        WanVAE.from_pretrained(path)


def test_missing_and_unexpected_keys_are_listed(tmp_path: Path, tiny_state: dict) -> None:
    state = dict(tiny_state)
    del state["decoder.head.2.bias"]
    state["decoder.head.9.weight"] = torch.zeros(1)
    path = tmp_path / "edited.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as error:
        WanVAE.from_pretrained(path, dim=8)
    message = str(error.value)
    assert "missing keys (1): decoder.head.2.bias" in message
    assert "unexpected keys (1): decoder.head.9.weight" in message


def test_a_dit_file_is_not_a_vae(wan_reference_dir: Path) -> None:
    with pytest.raises(CheckpointError, match="missing keys"):
        WanVAE.from_pretrained(wan_reference_dir / "dit" / "single" / "diffusion_pytorch_model.safetensors")


def test_wrong_width_names_both_values(wan_reference_dir: Path) -> None:
    with pytest.raises(CheckpointError, match=r"dim=8, but dim=96 was requested; pass dim=8"):
        WanVAE.from_pretrained(wan_reference_dir / "vae" / "wan_vae_tiny.safetensors")


def test_wrong_shape_is_reported(tmp_path: Path, tiny_state: dict) -> None:
    state = dict(tiny_state)
    state["decoder.head.2.bias"] = torch.zeros(4)
    path = tmp_path / "shape.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"decoder.head.2.bias \(checkpoint \[4\], model \[3\]\)"):
        WanVAE.from_pretrained(path, dim=8)


@pytest.mark.parametrize(
    ("shape", "pattern"),
    [
        ((1, 3, 8, 16, 16), "T=8 frames; T must be 4n\\+1, e.g. 5 or 9"),
        ((1, 3, 5, 12, 16), "H=12; it must be a positive multiple of 8"),
        ((1, 3, 5, 16, 20), "W=20; it must be a positive multiple of 8"),
        ((1, 4, 5, 16, 16), "video must be a tensor \\[B, 3, T, H, W\\]"),
        ((3, 5, 16, 16), "video must be a tensor \\[B, 3, T, H, W\\]"),
    ],
)
def test_bad_video_shapes(tiny_vae: WanVAE, shape: tuple[int, ...], pattern: str) -> None:
    with pytest.raises(InputError, match=pattern):
        tiny_vae.encode(torch.zeros(shape))


def test_bad_video_range_and_dtype(tiny_vae: WanVAE) -> None:
    with pytest.raises(InputError, match="expects \\[-1, 1\\]"):
        tiny_vae.encode(torch.full((1, 3, 1, 16, 16), 255.0))
    with pytest.raises(InputError, match="dtype torch.uint8"):
        tiny_vae.encode(torch.zeros(1, 3, 1, 16, 16, dtype=torch.uint8))


def test_bad_latents_and_images(tiny_vae: WanVAE) -> None:
    with pytest.raises(InputError, match="latents must be a tensor \\[B, 16, F, h, w\\]"):
        tiny_vae.decode(torch.zeros(1, 4, 2, 4, 4))
    with pytest.raises(InputError, match="image must be a tensor \\[B, 3, H, W\\]"):
        tiny_vae.encode_image(torch.zeros(3, 16, 16))
    assert issubclass(InputError, PusaError) and issubclass(CheckpointError, PusaError)
