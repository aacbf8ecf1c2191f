"""Input checks of the Wan-VAE: shapes, frame counts, spatial sizes and value ranges, with errors that say
which value is wrong and how to fix it."""

from __future__ import annotations

import torch

from pusa_fw.errors import InputError

SPATIAL_FACTOR = 8
TEMPORAL_FACTOR = 4
RANGE_SLACK = 1e-3
"""How far outside [-1, 1] a video may reach (rounding of a resize) before it is refused."""


def check_video(video: torch.Tensor, spatial_factor: int = SPATIAL_FACTOR) -> None:
    """Raise `InputError` unless `video` is a float ``[B, 3, T, H, W]`` in [-1, 1], T = 4n+1, H, W multiples of
    `spatial_factor` (8 for the Wan2.1 VAE, 16 for the Wan2.2 VAE)."""
    if not isinstance(video, torch.Tensor) or video.ndim != 5 or video.shape[1] != 3:
        raise InputError(
            f"video must be a tensor [B, 3, T, H, W] in [-1, 1], got shape {_shape(video)}; "
            "use encode_image() for [B, 3, H, W] images"
        )
    if not video.is_floating_point():
        raise InputError(
            f"video has dtype {video.dtype}; convert to float and scale to [-1, 1] (x / 127.5 - 1)"
        )
    num_frames, height, width = video.shape[2:]
    if (num_frames - 1) % TEMPORAL_FACTOR:
        lower = num_frames - (num_frames - 1) % TEMPORAL_FACTOR
        raise InputError(f"video has T={num_frames} frames; T must be 4n+1, e.g. {lower} or {lower + 4}")
    for name, value in (("H", height), ("W", width)):
        if value == 0 or value % spatial_factor:
            step = 2 * spatial_factor
            near = max(step, round(value / step) * step)
            raise InputError(
                f"video has {name}={value}; it must be a positive multiple of {spatial_factor} (the Wan "
                f"pipelines need {step}), e.g. resize or crop to {near}"
            )
    low, high = float(video.min()), float(video.max())
    if low < -1 - RANGE_SLACK or high > 1 + RANGE_SLACK:
        raise InputError(
            f"video values span [{low:.3g}, {high:.3g}]; the VAE expects [-1, 1] (for 0..255 use x / 127.5 - 1)"
        )


def check_image(image: torch.Tensor) -> None:
    """Raise `InputError` unless `image` is ``[B, 3, H, W]`` (the rest is checked as a one-frame video)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        raise InputError(
            f"image must be a tensor [B, 3, H, W] in [-1, 1], got shape {_shape(image)}; "
            "use image[None] for a single [3, H, W] image or encode() for videos"
        )


def check_latents(latents: torch.Tensor, z_dim: int) -> None:
    """Raise `InputError` unless `latents` is a non-empty float ``[B, z_dim, F, h, w]``."""
    if not isinstance(latents, torch.Tensor) or latents.ndim != 5 or latents.shape[1] != z_dim:
        raise InputError(f"latents must be a tensor [B, {z_dim}, F, h, w], got shape {_shape(latents)}")
    if min(latents.shape[2:]) == 0:
        raise InputError(f"latents have an empty dimension: shape {list(latents.shape)}")
    if not latents.is_floating_point():
        raise InputError(f"latents have dtype {latents.dtype}; pass a floating-point tensor")


def _shape(value: object) -> str:
    return str(list(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__
