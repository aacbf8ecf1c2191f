"""Conversions between model-range pixel tensors and uint8 pixel arrays.

Two conventions meet here:

- model tensors: float, channels first, values in [-1, 1] (the Wan-VAE's range); a video is
  `[3, T, H, W]` (or `[1, 3, T, H, W]` with a batch axis of one), an image `[3, H, W]`;
- file pixels: `numpy.uint8`, channels last, values 0..255; a video is `[T, H, W, 3]`, an image `[H, W, 3]`.

The map is `uint8 = round((x + 1) * 127.5)`, and back `x = uint8 / 127.5 - 1`, so 0 -> -1 and 255 -> 1
exactly and a round trip uint8 -> float -> uint8 is the identity.
"""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange

from ..errors import InputError

__all__ = ["image_to_uint8", "uint8_to_image", "uint8_to_video", "video_to_uint8"]

# Values this far outside [-1, 1] are float rounding (e.g. a VAE decode); anything further is an error.
RANGE_TOLERANCE = 1e-3


def _check_model_range(pixels: torch.Tensor, name: str) -> None:
    if not pixels.is_floating_point():
        raise InputError(f"{name} has dtype {pixels.dtype}; expected a float tensor with values in [-1, 1]")
    if pixels.numel() == 0:
        raise InputError(f"{name} is empty (shape {tuple(pixels.shape)}); it needs at least one pixel")
    if not bool(torch.isfinite(pixels).all()):
        raise InputError(f"{name} contains NaN or infinite values; check the decode that produced it")
    low, high = float(pixels.min()), float(pixels.max())
    if low < -1 - RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise InputError(
            f"{name} has values in [{low:.4g}, {high:.4g}], outside [-1, 1]; "
            "pixels are expected in the VAE range: clamp them first (x.clamp(-1, 1)) or rescale 0..1 data "
            "with x * 2 - 1"
        )


def _float_to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    scaled = (pixels.detach().to(device="cpu", dtype=torch.float32).clamp(-1, 1) + 1) * 127.5
    return scaled.round().to(torch.uint8)


def video_to_uint8(video: torch.Tensor) -> np.ndarray:
    """Convert a model-range video tensor to uint8 frames.

    Args:
        video: `[3, T, H, W]` or `[1, 3, T, H, W]`, float, values in [-1, 1].

    Returns:
        `numpy.uint8` array `[T, H, W, 3]`.

    Raises:
        InputError: wrong shape, a batch of more than one video, non-float, non-finite or out-of-range values.
    """
    if video.ndim == 5:
        if video.shape[0] != 1:
            raise InputError(
                f"video has batch size {video.shape[0]} (shape {tuple(video.shape)}); "
                "pass one sample at a time, e.g. video[i]"
            )
        video = video[0]
    if video.ndim != 4 or video.shape[0] != 3:
        raise InputError(
            f"video has shape {tuple(video.shape)}; "
            "expected [3, T, H, W] or [1, 3, T, H, W] (RGB, channels first)"
        )
    _check_model_range(video, "video")
    return rearrange(_float_to_uint8(video), "c t h w -> t h w c").numpy()


def uint8_to_video(frames: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Convert uint8 frames to a model-range video tensor.

    Args:
        frames: `numpy.uint8` array `[T, H, W, 3]`.
        dtype: floating dtype of the result.

    Returns:
        `[3, T, H, W]` tensor with values in [-1, 1].
    """
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(
            f"frames have dtype {frames.dtype} and shape {frames.shape}; expected uint8 [T, H, W, 3] (RGB)"
        )
    tensor = rearrange(torch.from_numpy(np.require(frames, requirements=["C", "W"])), "t h w c -> c t h w")
    return (tensor.to(torch.float32) / 127.5 - 1).to(dtype)


def image_to_uint8(image: torch.Tensor) -> np.ndarray:
    """Convert a model-range image tensor `[3, H, W]` to a `numpy.uint8` array `[H, W, 3]`."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise InputError(f"image has shape {tuple(image.shape)}; expected [3, H, W] (RGB, channels first)")
    _check_model_range(image, "image")
    return rearrange(_float_to_uint8(image), "c h w -> h w c").numpy()


def uint8_to_image(pixels: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Convert a `numpy.uint8` array `[H, W, 3]` to a `[3, H, W]` tensor with values in [-1, 1]."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise InputError(
            f"pixels have dtype {pixels.dtype} and shape {pixels.shape}; expected uint8 [H, W, 3]"
        )
    tensor = rearrange(torch.from_numpy(np.require(pixels, requirements=["C", "W"])), "h w c -> c h w")
    return (tensor.to(torch.float32) / 127.5 - 1).to(dtype)
