"""The one rule that fits an image or a clip to the output size, in torch (`pusa-fw generate` and ComfyUI).

Both front ends fit conditioning media with `fit_frames`, so a start image that is not at the output size
gives the same pixels, and therefore the same latents for a seed, through ``pusa-fw generate`` (Pillow
decodes, this module resizes) and through the ComfyUI pack (ComfyUI decodes to an ``IMAGE``, this module
resizes). It works on float tensors on any device; Pillow is not imported.

Values are in [0, 1] (ComfyUI's ``IMAGE`` range; an 8-bit file's ``uint8 / 255``). Resampling is bicubic
with antialiasing (`torch.nn.functional.interpolate(..., mode="bicubic", antialias=True)`), clamped back to
[0, 1]. Policies:

- ``"center-crop"``: cut the centre region of the source that has the target's aspect ratio (the long side
  loses equal amounts at both ends), then resize it to the target. Nothing is distorted.
- ``"letterbox"``: resize the whole source to fit inside the target (sides rounded to whole pixels), then
  pad equally at both ends of the short side with `fill`. Nothing is lost or distorted.

A source already at the target size is returned as it is (no resampling).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from ..errors import InputError

__all__ = ["FIT_POLICIES", "FitPolicy", "fit_frames"]

FitPolicy = Literal["center-crop", "letterbox"]
FIT_POLICIES: tuple[str, ...] = ("center-crop", "letterbox")


def _resample(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """`[T, C, H, W]` -> `[T, C, height, width]`, bicubic with antialiasing (unchanged at the same size)."""
    if tuple(frames.shape[-2:]) == (height, width):
        return frames
    return F.interpolate(frames, size=(height, width), mode="bicubic", antialias=True, align_corners=False)


def fit_frames(
    frames: torch.Tensor,
    size: tuple[int, int],
    policy: FitPolicy = "center-crop",
    *,
    fill: tuple[int, int, int] = (0, 0, 0),
) -> torch.Tensor:
    """Fit every frame to `size` with `policy` (see the module docstring).

    Args:
        frames: `[T, 3, H, W]` float, values in [0, 1].
        size: target `(height, width)`.
        policy: ``"center-crop"`` or ``"letterbox"``.
        fill: RGB 0..255 colour of the letterbox bars.

    Returns:
        `[T, 3, height, width]` float32 in [0, 1]; `frames` itself (as float32) when already at `size`.

    Raises:
        InputError: a bad policy, size or frame shape.
    """
    if policy not in FIT_POLICIES:
        raise InputError(f"resize policy {policy!r} is unknown; use one of {', '.join(FIT_POLICIES)}")
    if frames.dim() != 4 or frames.shape[1] != 3 or min(frames.shape[-2:]) < 1:
        raise InputError(f"frames must be [T, 3, H, W] with H, W >= 1, got {list(frames.shape)}")
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in size)
    ):
        raise InputError(f"size={size!r} must be a (height, width) pair of positive integers, e.g. (480, 832)")
    height, width = int(size[0]), int(size[1])
    frames = frames.to(torch.float32)
    in_height, in_width = int(frames.shape[-2]), int(frames.shape[-1])
    if (in_height, in_width) == (height, width):
        return frames
    if policy == "center-crop":
        scale = max(height / in_height, width / in_width)
        crop_height = min(in_height, max(1, round(height / scale)))
        crop_width = min(in_width, max(1, round(width / scale)))
        top, left = (in_height - crop_height) // 2, (in_width - crop_width) // 2
        cropped = frames[:, :, top:top + crop_height, left:left + crop_width]
        return _resample(cropped, height, width).clamp(0.0, 1.0)
    scale = min(height / in_height, width / in_width)
    inner_height = min(height, max(1, round(in_height * scale)))
    inner_width = min(width, max(1, round(in_width * scale)))
    inner = _resample(frames, inner_height, inner_width).clamp(0.0, 1.0)
    colour = torch.tensor(fill, dtype=torch.float32, device=frames.device).view(1, 3, 1, 1) / 255.0
    canvas = colour.expand(frames.shape[0], 3, height, width).clone()
    top, left = (height - inner_height) // 2, (width - inner_width) // 2
    canvas[:, :, top:top + inner_height, left:left + inner_width] = inner
    return canvas
