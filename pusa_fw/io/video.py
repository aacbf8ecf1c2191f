"""Writing videos with PyAV: H.264 mp4, written atomically; re-exports the readers of `video_read`.

Conventions, one per function:

- `write_video` takes uint8 frames `[H, W, 3]` (any iterable of them, e.g. an array `[T, H, W, 3]` or a
  generator); `save_video` takes a model tensor `[3, T, H, W]` or `[1, 3, T, H, W]`, float in [-1, 1].
- `read_video` returns uint8 frames `[T, H, W, 3]`; `load_video` returns a model tensor `[3, T, H, W]`,
  float in [-1, 1] (both in `pusa_fw.io.video_read`, re-exported here).

Output: libx264, yuv420p (so height and width must be even: an odd size is an error, never a silent
resize), constant quality `crf`, BT.709 limited range (converted and tagged), default 16 fps (Wan2.1's
training rate), `+faststart` for streaming. PyAV is imported here: import this module only for videos.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc

from ..errors import InputError
from .atomic import atomic_path
from .pixels import video_to_uint8
from .video_read import (
    SWSCALE_FLAGS,
    DecodedVideo,
    VideoInfo,
    as_fps,
    load_video,
    probe_video,
    read_video,
    resampled_source_index,
)

__all__ = [
    "DEFAULT_CRF",
    "DEFAULT_FPS",
    "DecodedVideo",
    "VideoInfo",
    "load_video",
    "probe_video",
    "read_video",
    "resampled_source_index",
    "save_video",
    "write_video",
]

DEFAULT_FPS = 16
DEFAULT_CRF = 18


def _tag_bt709(codec_context: av.video.codeccontext.VideoCodecContext) -> None:
    """Mark the stream as BT.709 limited range, the matrix the frames are converted with."""
    codec_context.colorspace = Colorspace.ITU709
    codec_context.color_range = ColorRange.MPEG
    codec_context.color_primaries = ColorPrimaries.BT709
    codec_context.color_trc = ColorTrc.BT709


def _checked_frames(frames: Iterable[np.ndarray], target: Path) -> Iterator[np.ndarray]:
    shape: tuple[int, ...] | None = None
    for index, frame in enumerate(frames):
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
            raise InputError(
                f"frame {index} for {str(target)!r} has dtype {frame.dtype} and shape {frame.shape}; "
                "expected uint8 [H, W, 3] (RGB); for float tensors in [-1, 1] use save_video"
            )
        if shape is None:
            shape = frame.shape
            height, width = shape[0], shape[1]
            if height % 2 or width % 2:
                raise InputError(
                    f"frames for {str(target)!r} are {height}x{width} (HxW); H.264 yuv420p needs even sizes: "
                    f"crop or resize to {height - height % 2}x{width - width % 2} first"
                )
        elif frame.shape != shape:
            raise InputError(
                f"frame {index} for {str(target)!r} has shape {frame.shape}, but frame 0 had {shape}; "
                "all frames must have the same size"
            )
        yield frame


def write_video(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    *,
    fps: float | Fraction = DEFAULT_FPS,
    crf: int = DEFAULT_CRF,
    preset: str = "medium",
    lossless: bool = False,
) -> Path:
    """Encode uint8 RGB frames to an H.264 mp4, atomically.

    The file appears under `path` only once it is complete; if anything fails (a bad frame halfway, the
    encoder, the disk) no file and no temporary file is left, and an existing file at `path` is kept.

    Args:
        path: output file (`.mp4`); its directory must exist.
        frames: uint8 frames `[H, W, 3]`, all the same even size; an array `[T, H, W, 3]` works.
        fps: frame rate (16 is Wan2.1's training rate).
        crf: x264 constant rate factor, 0 (best) .. 51 (worst); 18 is visually near-lossless.
        preset: x264 speed preset (`ultrafast` .. `veryslow`).
        lossless: encode RGB itself (x264's RGB encoder at crf 0) instead of BT.709 4:2:0, so
            `read_video` returns the frames bit for bit (`crf` is then ignored); for inputs to condition
            on, such as small synthetic clips whose colours 4:2:0 would blur.

    Returns:
        The written path.

    Raises:
        InputError: bad frames (dtype, shape, odd size, no frames), bad settings, unwritable path.
    """
    target = Path(path).expanduser()
    rate = as_fps(fps)
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
        raise InputError(f"crf={crf!r} must be an integer in 0..51 (lower is better quality; 18 is typical)")
    if target.suffix.lower() != ".mp4":
        raise InputError(f"video path {str(target)!r} must end in .mp4")
    checked = _checked_frames(frames, target)
    first = next(checked, None)
    if first is None:
        raise InputError(f"no frames given for {str(target)!r}; a video needs at least one frame")
    with (
        atomic_path(target) as temp_path,
        av.open(str(temp_path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container,
    ):
        stream = container.add_stream("libx264rgb" if lossless else "libx264", rate=rate)
        stream.height, stream.width = first.shape[0], first.shape[1]
        stream.pix_fmt = "rgb24" if lossless else "yuv420p"
        stream.options = {"crf": "0" if lossless else str(crf), "preset": preset}
        if not lossless:
            _tag_bt709(stream.codec_context)
        time_base = Fraction(rate.denominator, rate.numerator)
        for index, frame in enumerate(itertools.chain([first], checked)):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            if not lossless:
                picture = picture.reformat(
                    format="yuv420p",
                    dst_colorspace=Colorspace.ITU709,
                    dst_color_range=ColorRange.MPEG,
                    interpolation=SWSCALE_FLAGS,
                )
            picture.pts = index
            picture.time_base = time_base
            container.mux(stream.encode(picture))
        container.mux(stream.encode(None))
    return target


def save_video(
    path: str | os.PathLike[str],
    video: torch.Tensor,
    *,
    fps: float | Fraction = DEFAULT_FPS,
    crf: int = DEFAULT_CRF,
    preset: str = "medium",
    lossless: bool = False,
) -> Path:
    """Encode a model-range video tensor to an H.264 mp4, atomically (see `write_video`).

    Args:
        path: output file (`.mp4`).
        video: `[3, T, H, W]` or `[1, 3, T, H, W]`, float, values in [-1, 1]; H and W even.
        fps: frame rate, default 16.
        crf: x264 constant rate factor.
        preset: x264 speed preset.
        lossless: RGB at crf 0; `read_video` gives the uint8 frames back exactly.

    Returns:
        The written path.
    """
    return write_video(path, video_to_uint8(video), fps=fps, crf=crf, preset=preset, lossless=lossless)
