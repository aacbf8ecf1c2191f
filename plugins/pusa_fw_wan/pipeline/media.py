"""Conditioning media read from files: the images and clips a task holds, fitted to the output size.

`load_media` reads what the task's holds need (only the frames that are used) and `check_media` checks
that every held input is given and every given input is used. Encoding the media into source latents is
the core's, for any codec (`pusa_fw.conditioning_media.encode_sources`; its names are re-exported here).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from pusa_fw.conditioning_media import (
    ConditioningMedia,
    KeyframeEncoding,
    clip_end,
    clip_pixel_frames,
    encode_sources,
    sources_of,
)
from pusa_fw.errors import InputError
from pusa_fw.geometry import WAN21_GEOMETRY, LatentGeometry
from pusa_fw.task import Hold

__all__ = [
    "ConditioningMedia", "KeyframeEncoding", "check_media", "clip_end", "clip_pixel_frames", "encode_sources",
    "load_media", "sources_of",
]


def check_media(holds: Sequence[Hold], given: dict[str, bool], task_name: str, flags: dict[str, str]) -> None:
    """Raise unless every source the task holds is given and every given input is used.

    Args:
        holds: the task's holds.
        given: input name (``"image"``, ``"keyframe:0"``, ``"video"``, ``"video_b"``) -> whether given.
        task_name: for messages.
        flags: input kind -> how the user gives it (``{"image": "--image PATH", ...}``).
    """
    needed = set(sources_of(holds))
    for source in sorted(needed):
        if not given.get(source, False):
            kind = source.split(":")[0]
            what = f"keyframe {source.split(':')[1]}" if kind == "keyframe" else kind
            raise InputError(f"task {task_name!r} needs {what}: give {flags.get(kind, kind)}")
    unused = sorted(name for name, present in given.items() if present and name not in needed)
    if unused:
        wanted = ", ".join(sorted(needed)) or "no images or clips"
        raise InputError(
            f"task {task_name!r} does not use {', '.join(unused)} (it holds {wanted}); drop the input or "
            "choose a task that uses it (see `pusa-fw tasks`)"
        )


def _to_tensor(frames: np.ndarray, size: tuple[int, int], policy: str) -> torch.Tensor:
    """uint8 `[T, H', W', 3]` -> `[3, T, H, W]` in [-1, 1], each frame fitted to `size`.

    Frames not at `size` are fitted by the shared rule (`pusa_fw.io.resize.fit_frames`) without rounding to
    8 bits, as the ComfyUI pack fits an ``IMAGE`` batch, so a clip gives the same pixels on both sides.
    """
    from pusa_fw.io.video_read import fit_uint8_frames

    return fit_uint8_frames(frames, size, policy)


def _load_clip(path: Path, frames: int, end: str, size: tuple[int, int], fps: int,
               policy: str) -> torch.Tensor:
    from pusa_fw.io.video_read import read_video

    decoded = read_video(path, fps=Fraction(fps), num_frames=frames if end == "head" else None)
    if len(decoded.frames) < frames:
        raise InputError(
            f"video {str(path)!r} has {len(decoded.frames)} frames at {fps} fps; the task needs {frames} "
            "(give a longer clip, a lower --fps, or hold fewer frames)"
        )
    chosen = decoded.frames[:frames] if end == "head" else decoded.frames[-frames:]
    return _to_tensor(chosen, size, policy)


def load_media(
    holds: Sequence[Hold],
    *,
    image: Path | None,
    keyframes: Sequence[Path],
    video: Path | None,
    video_b: Path | None,
    size: tuple[int, int],
    fps: int,
    policy: str = "center-crop",
    geometry: LatentGeometry = WAN21_GEOMETRY,
) -> ConditioningMedia:
    """Read the inputs the holds need from files, fitted to `size` (only the frames that are used).

    Raises:
        InputError: a file is missing or cannot be decoded, or a clip is too short.
    """
    from pusa_fw.io.image import load_image

    media = ConditioningMedia()
    if image is not None:
        media.image = load_image(image, size, policy)  # type: ignore[arg-type]
    media.keyframes = [load_image(path, size, policy) for path in keyframes]  # type: ignore[arg-type]
    for name, path in (("video", video), ("video_b", video_b)):
        if path is not None:
            end = clip_end(holds, name)
            clip = _load_clip(path, clip_pixel_frames(holds, name, geometry), end, size, fps, policy)
            setattr(media, name, clip)
    return media
