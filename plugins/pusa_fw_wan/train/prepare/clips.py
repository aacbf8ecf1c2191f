"""Which source frames each clip of a video takes: frame-count buckets, extraction mode, fps resampling.

The source is resampled to the target rate first (output frame i shows source frame
``floor(i * source_fps / fps)``, see `pusa_fw.io.video_read`); clips are then cut from the resampled
timeline. A video takes the longest frame-count bucket it can fill. Modes:

- ``head``: one clip from the start;
- ``uniform``: ``clips_per_video`` clips whose starts are spread evenly over the video (fewer when the
  video is too short for distinct starts);
- ``chunk``: consecutive, non-overlapping clips from the start, at most ``clips_per_video``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from pusa_fw.errors import InputError
from pusa_fw.io.video_read import resampled_source_index

__all__ = ["ClipPlan", "TooShortError", "plan_clips", "resampled_length"]


class TooShortError(InputError):
    """A video has fewer frames (at the target rate) than the shortest frame-count bucket."""


@dataclass(frozen=True)
class ClipPlan:
    """One clip of a video.

    Attributes:
        start: first frame on the resampled timeline.
        num_frames: pixel frames in the clip.
        source_indices: the source-frame index of each clip frame, `num_frames` of them.
    """

    start: int
    num_frames: int
    source_indices: tuple[int, ...]

    @property
    def end(self) -> int:
        """One past the last frame on the resampled timeline."""
        return self.start + self.num_frames


def resampled_length(num_source_frames: int, source_fps: Fraction, fps: Fraction) -> int:
    """Frames on the resampled timeline: the i with ``floor(i * source_fps / fps) < num_source_frames``."""
    return math.ceil(Fraction(num_source_frames) * fps / source_fps)


def _starts(available: int, length: int, mode: str, clips: int) -> list[int]:
    room = available - length
    if mode == "head":
        return [0]
    if mode == "chunk":
        return [index * length for index in range(min(clips, available // length))]
    if mode == "uniform":
        if clips == 1:
            return [room // 2]
        return sorted({round(index * room / (clips - 1)) for index in range(clips)})
    raise InputError(f"extraction={mode!r} is unknown; use head, uniform or chunk")


def plan_clips(
    num_source_frames: int,
    source_fps: Fraction,
    fps: Fraction | None,
    frame_counts: tuple[int, ...],
    mode: str = "head",
    clips_per_video: int = 1,
) -> list[ClipPlan]:
    """Cut a video into clips.

    Args:
        num_source_frames: frames in the file.
        source_fps: the file's frame rate.
        fps: target rate, or None to keep the file's.
        frame_counts: allowed clip lengths (each valid for the codec); the longest that fits is used.
        mode: ``head``, ``uniform`` or ``chunk``.
        clips_per_video: clips for ``uniform``; the most for ``chunk``.

    Returns:
        The clips, in timeline order.

    Raises:
        TooShortError: the video is shorter than the shortest frame count.
    """
    target = source_fps if fps is None else fps
    available = resampled_length(num_source_frames, source_fps, target)
    fitting = [count for count in frame_counts if count <= available]
    if not fitting:
        raise TooShortError(
            f"{num_source_frames} frames at {float(source_fps):g} fps give {available} frames at "
            f"{float(target):g} fps; the shortest clip needs {min(frame_counts)}"
        )
    length = max(fitting)
    return [
        ClipPlan(
            start, length, tuple(resampled_source_index(start + i, source_fps, target) for i in range(length))
        )
        for start in _starts(available, length, mode, clips_per_video)
    ]
