"""Reading Wan VAE weights: the official ``Wan2.1_VAE.pth`` / ``Wan2.2_VAE.pth``, a safetensors copy, or a
diffusers ``vae/`` (Wan2.1 only), and telling the two VAEs apart by their keys (`detect_vae_version`).

Everything is returned under the official key names (``encoder.downsamples.3.residual.2.weight`` ...).
Diffusers ``AutoencoderKLWan`` names are translated by `diffusers_key`, which is derived from the
architecture (stage sizes), so it works for any width. Nothing is unpickled: ``.pth`` files are read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from pusa_fw.errors import CheckpointError

from pusa_fw_wan.vae.networks import VAEArchitecture
from pusa_fw_wan.weights import compare_keys, format_key_list, read_tensor_file

WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
"""Per-channel latent means hard-coded in the official ``WanVAE`` wrapper."""

WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip
"""Per-channel latent standard deviations hard-coded in the official ``WanVAE`` wrapper."""

WAN22_LATENTS_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)  # fmt: skip
"""Per-channel latent means hard-coded in the official ``Wan2_2_VAE`` wrapper (48 channels)."""

WAN22_LATENTS_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)  # fmt: skip
"""Per-channel latent standard deviations hard-coded in the official ``Wan2_2_VAE`` wrapper."""

VAE_ANCHOR_KEYS = ("encoder.conv1.weight", "conv1.weight", "conv2.weight", "decoder.conv1.weight")
"""Tensors both Wan VAEs have under these names; a file with none of them is not a Wan VAE."""
_WAN22_MARKERS = ("encoder.downsamples.0.downsamples.", "decoder.upsamples.0.upsamples.")

DIFFUSERS_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_WHAT = "VAE checkpoint"
_RESIDUAL_TO_DIFFUSERS = {
    "residual.0": "norm1",
    "residual.2": "conv1",
    "residual.3": "norm2",
    "residual.6": "conv2",
}


@dataclass(frozen=True)
class LoadedVAEWeights:
    """Tensors under official names plus what the checkpoint says about itself.

    Attributes:
        state_dict: official key -> tensor.
        latents_mean: the 16 normalisation means (from a diffusers config, else the Wan2.1 constants).
        latents_std: the 16 normalisation stds.
        source: a short description of the file for error messages.
    """

    state_dict: dict[str, torch.Tensor]
    latents_mean: tuple[float, ...]
    latents_std: tuple[float, ...]
    source: str


def _decoder_stage_offsets(arch: VAEArchitecture) -> list[int]:
    """Index in ``decoder.upsamples`` where each decoder stage starts (0, 4, 8, 12 for the Wan2.1 VAE)."""
    offsets, position = [], 0
    for stage in range(len(arch.dim_mult)):
        offsets.append(position)
        position += arch.num_res_blocks + 1 + (1 if stage != len(arch.dim_mult) - 1 else 0)
    return offsets


def diffusers_key(official: str, arch: VAEArchitecture) -> str:
    """Name of the official tensor `official` in a diffusers ``AutoencoderKLWan`` state dict.

    Raises:
        CheckpointError: for a name that is not part of the Wan2.1 VAE.
    """
    top = {"conv1.": "quant_conv.", "conv2.": "post_quant_conv."}
    for prefix, renamed in top.items():
        if official.startswith(prefix):
            return renamed + official[len(prefix) :]
    match = re.fullmatch(r"(encoder|decoder)\.(\w+)\.(.+)", official)
    if match is None:
        raise CheckpointError(f"tensor name {official!r} is not part of the Wan2.1 VAE")
    net, part, rest = match.groups()
    if part == "conv1":
        return f"{net}.conv_in.{rest}"
    if part == "head":
        index, leaf = rest.split(".", 1)
        return f"{net}.{ {'0': 'norm_out', '2': 'conv_out'}[index] }.{leaf}"
    if part == "middle":
        index, leaf = rest.split(".", 1)
        block = {"0": "resnets.0", "1": "attentions.0", "2": "resnets.1"}[index]
        return f"{net}.mid_block.{block}.{_block_leaf(leaf)}"
    index_text, leaf = rest.split(".", 1)
    index = int(index_text)
    if part == "downsamples":
        return f"{net}.down_blocks.{index}.{_block_leaf(leaf)}"
    if part == "upsamples":
        offsets = _decoder_stage_offsets(arch)
        stage = max(s for s, start in enumerate(offsets) if start <= index)
        within = index - offsets[stage]
        if within <= arch.num_res_blocks:
            return f"{net}.up_blocks.{stage}.resnets.{within}.{_block_leaf(leaf)}"
        return f"{net}.up_blocks.{stage}.upsamplers.0.{leaf}"
    raise CheckpointError(f"tensor name {official!r} is not part of the Wan2.1 VAE")


def _block_leaf(leaf: str) -> str:
    """Rename the inside of a residual block (``residual.2.weight`` -> ``conv1.weight``)."""
    for official, renamed in _RESIDUAL_TO_DIFFUSERS.items():
        if leaf.startswith(official + "."):
            return renamed + leaf[len(official) :]
    if leaf.startswith("shortcut."):
        return "conv_shortcut" + leaf[len("shortcut") :]
    return leaf


def read_vae_weights(path: str | Path, arch: VAEArchitecture, official_keys: list[str]) -> LoadedVAEWeights:
    """Read a VAE checkpoint and return its tensors under the official names.

    Args:
        path: ``Wan2.1_VAE.pth``, a ``.safetensors`` file with the same keys, or a diffusers ``vae/``
            directory (``config.json`` + ``diffusion_pytorch_model.safetensors``), or the model root that
            holds such a ``vae/`` folder.
        arch: the layout the weights are meant for (stages and blocks, used to translate diffusers
            names; the widths are read from the tensors by the caller).
        official_keys: every key the model expects (to translate and to report missing ones).

    Raises:
        CheckpointError: the path is missing or unreadable, holds something other than tensors, or
            its diffusers config describes a different VAE.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"VAE checkpoint {str(path)!r} does not exist; pass the official Wan2.1_VAE.pth, a .safetensors "
            "file with the same keys, or a diffusers vae/ directory"
        )
    if path.is_dir():
        return _read_diffusers_dir(path, arch, official_keys)
    tensors, _ = read_tensor_file(path, what=_WHAT)
    return LoadedVAEWeights(tensors, WAN21_LATENTS_MEAN, WAN21_LATENTS_STD, str(path))


def _read_diffusers_dir(path: Path, arch: VAEArchitecture, official_keys: list[str]) -> LoadedVAEWeights:
    """Read a diffusers ``AutoencoderKLWan`` directory and translate its names to the official ones."""
    if not (path / "config.json").is_file() and (path / "vae" / "config.json").is_file():
        path = path / "vae"
    config_path = path / "config.json"
    if not config_path.is_file():
        raise CheckpointError(
            f"directory {str(path)!r} has no config.json; pass a diffusers vae/ directory "
            "(config.json + diffusion_pytorch_model.safetensors) or a single .pth/.safetensors file"
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read {str(config_path)!r}: {error}") from error
    _check_diffusers_config(config, arch, config_path)
    weights = next((path / name for name in DIFFUSERS_WEIGHT_FILES if (path / name).is_file()), None)
    if weights is None:
        raise CheckpointError(f"directory {str(path)!r} holds none of {list(DIFFUSERS_WEIGHT_FILES)}")
    raw, _ = read_tensor_file(weights, what=_WHAT)
    by_diffusers_name = {diffusers_key(key, arch): key for key in official_keys}
    unexpected = sorted(name for name in raw if name not in by_diffusers_name)
    if unexpected:
        raise CheckpointError(
            f"{str(weights)!r} has {len(unexpected)} tensors that are not part of a Wan2.1 AutoencoderKLWan: "
            f"{format_key_list(unexpected)}"
        )
    state = {by_diffusers_name[name]: tensor for name, tensor in raw.items()}
    mean = tuple(float(v) for v in config.get("latents_mean", WAN21_LATENTS_MEAN))
    std = tuple(float(v) for v in config.get("latents_std", WAN21_LATENTS_STD))
    return LoadedVAEWeights(state, mean, std, str(weights))


def _check_diffusers_config(config: dict, arch: VAEArchitecture, config_path: Path) -> None:
    """Raise unless the diffusers config describes the Wan2.1 VAE layout that `arch` builds."""
    if config.get("is_residual", False) or config.get("patch_size") not in (None, 1):
        raise CheckpointError(
            f"{str(config_path)!r} describes a Wan2.2 VAE (is_residual/patch_size set) in diffusers' layout, "
            "which is not supported; pass the official Wan2.2_VAE.pth or a .safetensors copy with its keys"
        )
    expected = {
        "dim_mult": list(arch.dim_mult),
        "num_res_blocks": arch.num_res_blocks,
        "attn_scales": [],
        "temperal_downsample": list(arch.temporal_downsample),
    }
    for name, value in expected.items():
        if name in config and config[name] != value:
            raise CheckpointError(
                f"{str(config_path)!r} has {name}={config[name]!r} but the model was built with {value!r}; "
                f"pass the matching value (e.g. dim= / z_dim= to WanVAE.from_pretrained)"
            )
    decoder_dim = config.get("decoder_base_dim")
    if decoder_dim not in (None, config.get("base_dim")):
        raise CheckpointError(
            f"{str(config_path)!r} has decoder_base_dim={decoder_dim} != base_dim={config.get('base_dim')}; "
            "only VAEs whose encoder and decoder share one width are supported"
        )


def detect_vae_version(state: dict[str, torch.Tensor], source: str) -> str:
    """``"2.2"`` for the Wan2.2 VAE's key layout, else ``"2.1"`` (the strict key check then lists what is off).

    The Wan2.2 VAE has stages with their own ``downsamples`` / ``upsamples`` and a 12-channel (patchified)
    encoder input; the Wan2.1 VAE has flat ``encoder.downsamples.N`` blocks and a 3-channel input.

    Raises:
        CheckpointError: the file has none of the tensors every Wan VAE has (`VAE_ANCHOR_KEYS`).
    """
    if not any(key in state for key in VAE_ANCHOR_KEYS):
        found = format_key_list(sorted(state), limit=3)
        raise CheckpointError(
            f"checkpoint {source} is neither a Wan2.1 nor a Wan2.2 VAE: missing keys {', '.join(VAE_ANCHOR_KEYS)} "
            f"(it holds {len(state)} tensors: {found}); pass Wan2.1_VAE.pth, Wan2.2_VAE.pth or a .safetensors copy"
        )
    conv_in = state.get("encoder.conv1.weight")
    patchified = conv_in is not None and conv_in.ndim == 5 and conv_in.shape[1] == 12
    return "2.2" if patchified or any(key.startswith(_WAN22_MARKERS) for key in state) else "2.1"


def check_state_dict(
    state: dict[str, torch.Tensor],
    expected: dict[str, torch.Size],
    source: str,
    model: str = "the Wan2.1 VAE",
) -> None:
    """Raise one `CheckpointError` listing missing keys, unexpected keys and shape mismatches.

    Args:
        state: the tensors read from the checkpoint (official names).
        expected: official name -> shape of every tensor the model has.
        source: checkpoint description for the message.
        model: what the tensors were loaded into.
    """
    found = {key: tuple(tensor.shape) for key, tensor in state.items()}
    compare_keys(found, expected).raise_if_bad(
        source, model, "Is it a complete Wan2.1_VAE.pth / Wan2.2_VAE.pth (not a DiT file)?"
    )


def check_requested_widths(source: str, widths: dict[str, tuple[int | None, int | None]]) -> None:
    """Raise `CheckpointError` when a requested width (name -> (wanted, found)) differs from the checkpoint's."""
    for name, (wanted, found) in widths.items():
        if wanted is not None and found is not None and wanted != found:
            raise CheckpointError(
                f"{source} holds a VAE with {name}={found}, but {name}={wanted} was requested; "
                f"pass {name}={found} (or {name}=None to read it from the checkpoint)"
            )


def infer_widths(state: dict[str, torch.Tensor]) -> tuple[int | None, int | None]:
    """``(dim, z_dim)`` read from the shapes of ``encoder.conv1.weight`` and ``conv2.weight`` (None if absent)."""
    dim = state["encoder.conv1.weight"].shape[0] if "encoder.conv1.weight" in state else None
    z_dim = state["conv2.weight"].shape[0] if "conv2.weight" in state else None
    return dim, z_dim
