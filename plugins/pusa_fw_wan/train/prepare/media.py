"""Read one manifest item into clips of resized frames: images as one-frame clips, videos cut by `plan_clips`.

Errors are `MediaProblem`s carrying the summary reason (``corrupt``, ``too short``), so the run can name
the item and go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from pusa_fw.errors import InputError
from pusa_fw_wan.train.prepare.buckets import nearest_bucket
from pusa_fw_wan.train.prepare.clips import TooShortError, plan_clips
from pusa_fw_wan.train.prepare.config import PrepareConfig
from pusa_fw_wan.train.prepare.manifest import ManifestItem

__all__ = ["MediaClip", "MediaProblem", "read_item_clips"]


class MediaProblem(Exception):
    """An item that cannot be turned into clips; `reason` is the summary's short label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class MediaClip:
    """Frames of one clip, resized and cropped to its bucket.

    Attributes:
        frames: uint8 ``[T, H, W, 3]``.
        source_indices: source-frame index of each frame (``[0] * T`` for an image).
        fps: the clip's frame rate (None for an image).
        source_fps: the file's frame rate (None for an image).
        source_size: ``(height, width)`` of the file.
    """

    frames: np.ndarray
    source_indices: tuple[int, ...]
    fps: Fraction | None
    source_fps: Fraction | None
    source_size: tuple[int, int]

    @property
    def kind(self) -> str:
        """``"image"`` or ``"video"``."""
        return "image" if self.fps is None else "video"


def _resized(frames: np.ndarray, bucket: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    from pusa_fw.io.image import resize_image

    if frames.shape[1:3] == bucket:
        return frames
    return np.stack(
        [np.asarray(resize_image(Image.fromarray(frame), bucket, "center-crop")) for frame in frames]
    )


def _image_clips(item: ManifestItem, buckets: list[tuple[int, int]], geometry: Any) -> list[MediaClip]:
    from pusa_fw.io.image import read_image

    try:
        image = read_image(item.path)
    except InputError as error:
        raise MediaProblem("corrupt", str(error)) from error
    size = (image.height, image.width)
    pixels = np.asarray(image, dtype=np.uint8)
    repeats = 1 if geometry.first_frame_alone else geometry.temporal_stride
    frames = _resized(np.repeat(pixels[None], repeats, axis=0), nearest_bucket(*size, buckets))
    return [MediaClip(frames, (0,) * repeats, None, None, size)]


def _video_clips(
    item: ManifestItem, config: PrepareConfig, buckets: list[tuple[int, int]], frame_counts: tuple[int, ...]
) -> list[MediaClip]:
    from pusa_fw.io.video_read import as_fps, probe_video, read_video

    try:
        info = probe_video(item.path)
        target = None if config.fps is None else as_fps(config.fps)
        plans = plan_clips(
            info.num_frames, info.fps, target, frame_counts, config.extraction, config.clips_per_video
        )
        decoded = read_video(item.path, fps=target, num_frames=max(plan.end for plan in plans))
    except TooShortError as error:
        raise MediaProblem("too short", str(error)) from error
    except InputError as error:
        raise MediaProblem("corrupt", str(error)) from error
    except Exception as error:  # a decoder failing in an unforeseen way is still one bad file
        raise MediaProblem(
            "corrupt", f"cannot decode {item.file_name!r}: {type(error).__name__}: {error}"
        ) from error
    size = (info.height, info.width)
    bucket = nearest_bucket(*size, buckets)
    return [
        MediaClip(
            _resized(decoded.frames[plan.start : plan.end], bucket),
            tuple(int(index) for index in decoded.source_indices[plan.start : plan.end]),
            decoded.fps,
            info.fps,
            size,
        )
        for plan in plans
    ]


def read_item_clips(
    item: ManifestItem,
    config: PrepareConfig,
    buckets: list[tuple[int, int]],
    geometry: Any,
    frame_counts: tuple[int, ...],
) -> list[MediaClip]:
    """The clips of one item, resized and center-cropped to the bucket nearest its aspect ratio.

    Args:
        item: the manifest row (its file exists).
        config: the run's settings (fps, extraction, clips per video).
        buckets: the resolution buckets ``(height, width)``.
        geometry: the codec's `LatentGeometry` (how many frames an image clip needs).
        frame_counts: the video frame-count buckets valid for the geometry.

    Raises:
        MediaProblem: the file cannot be decoded (``corrupt``) or is too short (``too short``).
    """
    if item.is_image:
        return _image_clips(item, buckets, geometry)
    return _video_clips(item, config, buckets, frame_counts)
