"""The two encoders `prepare_dataset` needs, as small interfaces, and their Wan implementations.

Any codec with ``geometry``, ``identity`` and ``encode(video)`` and any text embedder with ``identity`` and
``encode(prompts)`` plugs in (a toy codec for synthetic worlds, another VAE). The identities are written into
every cached clip, so a cache made with other weights is detected and re-encoded (an encoder without an
``identity`` is known by its class name only).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from pusa_fw.errors import InputError

__all__ = ["TextEmbedder", "VideoCodec", "WanCodec", "WanTextEmbedder", "identity_of", "load_wan_encoders"]


@runtime_checkable
class VideoCodec(Protocol):
    """A video autoencoder's encoder side.

    Attributes:
        geometry: its `pusa_fw.geometry.LatentGeometry` (frame map, spatial factor, channels).
        identity: a string that changes when the weights or settings change.
    """

    geometry: Any
    identity: str

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, H, W]`` in [-1, 1] -> latents ``[B, *geometry.latent_shape(T, H, W)]``."""
        ...


@runtime_checkable
class TextEmbedder(Protocol):
    """A text encoder giving the backbone's context.

    Attributes:
        identity: a string that changes when the weights, tokenizer or settings change.
        max_length: rows a context is padded to for the backbone (512 for umT5).
    """

    identity: str
    max_length: int

    def encode(self, prompts: list[str]) -> list[torch.Tensor]:
        """One ``[L_i, D]`` embedding per prompt: its real tokens only, no padding rows."""
        ...


def identity_of(encoder: Any) -> str:
    """An encoder's ``identity``, or its qualified class name when it declares none."""
    identity = getattr(encoder, "identity", None)
    return str(identity) if identity else f"{type(encoder).__module__}.{type(encoder).__qualname__}"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class WanCodec:
    """`VideoCodec` over a loaded `WanVAE` (normalised posterior mean, float32 latents on the CPU).

    The Wan2.1 VAE (/8, 16 channels) and the Wan2.2 VAE of TI2V-5B (/16, 48 channels) both plug in: the
    geometry is the VAE's, and the identity names its version (``wan21-vae:...`` / ``wan22-vae:...``).

    Args:
        vae: the loaded `pusa_fw_wan.vae.WanVAE` (or `Wan22VAE`).
        identity: what identifies its weights (e.g. the file's `file_identity`).
    """

    def __init__(self, vae: Any, identity: str) -> None:
        from pusa_fw.geometry import WAN21_GEOMETRY

        self.vae = vae
        self.geometry = getattr(vae, "geometry", None) or WAN21_GEOMETRY
        version = str(getattr(vae, "version", "2.1")).replace(".", "")
        self.identity = f"wan{version}-vae:{_short_hash(f'{identity}|{vae.dtype}')}"

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """See `VideoCodec.encode`."""
        return self.vae.encode(video).float().cpu()


class WanTextEmbedder:
    """`TextEmbedder` over a `WanTextEncoder`: the umT5 rows of the real tokens (EOS included), float32.

    Args:
        encoder: the loaded `pusa_fw_wan.text.WanTextEncoder`.
    """

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self.max_length = int(encoder.max_length)
        self.identity = f"umt5:{_short_hash(f'{encoder.model_identity}|{encoder.max_length}')}"

    def encode(self, prompts: list[str]) -> list[torch.Tensor]:
        """See `TextEmbedder.encode`."""
        from pusa_fw_wan.text.encoder import clean_prompt

        _, mask = self.encoder.tokenize([clean_prompt(prompt) for prompt in prompts])
        context = self.encoder.encode(list(prompts)).float().cpu()
        return [context[row, : int(length)].clone() for row, length in enumerate(mask.sum(dim=1).tolist())]


def load_wan_encoders(
    model: str | os.PathLike[str] | None,
    *,
    vae: str | os.PathLike[str] | None = None,
    text_encoder: str | os.PathLike[str] | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
    device: str = "auto",
    dtype: str = "auto",
) -> tuple[WanCodec, WanTextEmbedder]:
    """Load the Wan VAE (float32) and umT5 encoder the way ``pusa-fw generate`` finds them.

    A Wan2.1 T2V folder gives ``Wan2.1_VAE``, a Wan2.2 TI2V-5B folder ``Wan2.2_VAE`` (/16, 48 channels);
    a VAE (given or found) whose latents the folder's DiT does not take is refused before any weight is read.

    Args:
        model: the Wan model directory (``--model DIR``); the VAE and encoder default to its files.
        vae: the VAE file, if not the model directory's.
        text_encoder: the umT5 file, if not the model directory's.
        tokenizer: the tokenizer directory, if not found beside the encoder.
        device: ``auto``, ``cpu``, ``cuda``...
        dtype: text-encoder dtype (``auto``: bf16 on GPUs, fp32 on the CPU).

    Returns:
        ``(codec, text_embedder)``.

    Raises:
        CheckpointError: the VAE's latent channels are not the DiT's ``in_dim``.
    """
    from pusa_fw_wan.pipeline.loading import (
        model_geometry,
        resolve_device,
        resolve_dtype,
        resolve_model_paths,
        umt5_overrides,
    )
    from pusa_fw_wan.text.encoder import WanTextEncoder
    from pusa_fw_wan.text.prompt_cache import file_identity
    from pusa_fw_wan.vae.model import WanVAE

    def as_path(value: str | os.PathLike[str] | None) -> Path | None:
        return None if value is None else Path(value)

    paths = resolve_model_paths(as_path(model), as_path(vae), as_path(text_encoder), as_path(tokenizer))
    if paths.format is not None:
        raise InputError(
            f"--model {str(model)!r} is a {paths.format!r} model, not a Wan checkpoint; prepare encodes with "
            "the Wan-VAE and umT5 (train such a model from its own training source instead)"
        )
    if _has_dit(paths.dit):
        model_geometry(paths)  # a VAE whose channels are not the DiT's in_dim: refused in one line
    where = resolve_device(device)
    text_dtype = resolve_dtype(dtype, where)
    loaded_vae = WanVAE.from_pretrained(paths.vae, dim=None, z_dim=None, dtype=torch.float32, device=where)
    encoder = WanTextEncoder.from_pretrained(
        paths.text_encoder,
        tokenizer=paths.tokenizer,
        dtype=text_dtype,
        device=where,
        cache_dir=None,
        **umt5_overrides(paths.text_encoder),
    )
    return WanCodec(loaded_vae, file_identity(paths.vae)), WanTextEmbedder(encoder)


def _has_dit(path: Path) -> bool:
    """Whether `path` holds a readable Wan DiT (a folder of only the VAE and umT5 may be prepared with too;
    there the VAE cannot be checked against a DiT)."""
    from pusa_fw.errors import CheckpointError
    from pusa_fw_wan.dit.checkpoint_source import read_wan_config

    try:
        read_wan_config(path)
    except CheckpointError:
        return False
    return True
