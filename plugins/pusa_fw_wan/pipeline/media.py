"""Conditioning media: the images and clips a task holds, read from files and encoded into source latents.

A task's `Hold` list says which latent frame of the timeline takes its content from which input
(``"image"``, ``"keyframe:K"``, ``"video"``, ``"video_b"``) and from which latent of that input's own
encoding. This module turns the inputs into one source tensor `[1, 16, N, h, w]` with those latents at
the held frames (zeros elsewhere; the sampler reads held frames only):

- an image or keyframe is VAE-encoded on its own as a one-frame video (Pusa's rule), wherever it is
  placed; with ``keyframe_encoding="video"`` a keyframe at latent k >= 1 is instead encoded as a still
  5-frame clip and its second latent is used, a latent of the 4-frame-chunk kind that latent k is;
- a clip is encoded once (causally, in its own temporal context; clip B of a transition is encoded
  separately from clip A), as many frames as its held latents need. Which end of the clip is used follows
  from the timeline: a clip whose held frames all come before the first generated frame is continued, so
  its *last* frames are used (extension, transition clip A); otherwise its *first* frames (v2v,
  transition clip B).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from pusa_fw.errors import InputError
from pusa_fw.geometry import WAN21_GEOMETRY, LatentGeometry
from pusa_fw.task import Hold

__all__ = ["ConditioningMedia", "check_media", "clip_end", "encode_sources", "load_media", "sources_of"]

KeyframeEncoding = Literal["image", "video"]


@dataclass
class ConditioningMedia:
    """Input pixels for a task, values in [-1, 1], already at the output height and width.

    Attributes:
        image: `[3, H, W]` held as ``"image"``.
        keyframes: `[3, H, W]` each; entry K feeds ``"keyframe:K"``.
        video: `[3, T, H, W]` the given clip (``"video"``).
        video_b: `[3, T, H, W]` the second clip (``"video_b"``).
    """

    image: torch.Tensor | None = None
    keyframes: list[torch.Tensor] = field(default_factory=list)
    video: torch.Tensor | None = None
    video_b: torch.Tensor | None = None


def sources_of(holds: Sequence[Hold]) -> dict[str, list[Hold]]:
    """Holds grouped by source name, in order of first appearance."""
    grouped: dict[str, list[Hold]] = defaultdict(list)
    for hold in holds:
        grouped[hold.source].append(hold)
    return dict(grouped)


def clip_end(holds: Sequence[Hold], source: str) -> Literal["head", "tail"]:
    """Which end of clip `source` the task uses, as its holds declare (`Hold.clip_end`).

    Args:
        holds: all holds of the task.
        source: ``"video"`` or ``"video_b"``.
    """
    ends = {hold.clip_end for hold in holds if hold.source == source}
    if len(ends) != 1:
        raise InputError(f"the task's holds of {source!r} disagree on which end of the clip to use: {sorted(ends)}")
    return ends.pop()


def clip_pixel_frames(holds: Sequence[Hold], source: str, geometry: LatentGeometry = WAN21_GEOMETRY) -> int:
    """Pixel frames of clip `source` the task needs (Wan2.1: 4L - 3 for L latents of its encoding)."""
    return geometry.num_frames(max(hold.source_frame for hold in holds if hold.source == source) + 1)


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
    """uint8 `[T, H', W', 3]` -> `[3, T, H, W]` in [-1, 1], each frame fitted to `size`."""
    from PIL import Image

    from pusa_fw.io.image import resize_image
    from pusa_fw.io.pixels import uint8_to_video

    fitted = [
        np.asarray(resize_image(Image.fromarray(frame), size, policy))  # type: ignore[arg-type]
        for frame in frames
    ]
    return uint8_to_video(np.stack(fitted))


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


def _encode_keyframe(vae: torch.nn.Module, picture: torch.Tensor, latent_frame: int,
                     encoding: KeyframeEncoding, geometry: LatentGeometry) -> torch.Tensor:
    """`[C, h, w]` latent of one picture for latent frame `latent_frame`.

    ``"video"`` encodes a still clip of two latent frames and keeps the second (a full temporal group).
    """
    batch = picture.unsqueeze(0)
    if encoding == "image" or latent_frame == 0:
        return vae.encode_image(batch)[0, :, 0]
    still = batch.unsqueeze(2).expand(-1, -1, geometry.num_frames(2), -1, -1)
    return vae.encode(still)[0, :, 1]


def _clip_part(clip: torch.Tensor, holds: Sequence[Hold], source: str, geometry: LatentGeometry) -> torch.Tensor:
    """The frames of a `[3, T, H, W]` clip the task uses: its first or last `clip_pixel_frames`."""
    needed = clip_pixel_frames(holds, source, geometry)
    if clip.ndim != 4 or clip.shape[1] < needed:
        raise InputError(
            f"{source} has shape {tuple(clip.shape)}; the task needs [3, T >= {needed}, H, W] (a longer clip)"
        )
    return clip[:, :needed] if clip_end(holds, source) == "head" else clip[:, -needed:]


def _not_given(hold: Hold) -> InputError:
    return InputError(f"the task holds latent frame {hold.frame} from {hold.source!r}, which is not given")


def encode_sources(
    vae: torch.nn.Module,
    holds: Sequence[Hold],
    media: ConditioningMedia,
    num_latents: int,
    *,
    keyframe_encoding: KeyframeEncoding = "image",
    geometry: LatentGeometry = WAN21_GEOMETRY,
) -> torch.Tensor | None:
    """Encode the held inputs into the source latents of the timeline.

    Args:
        vae: a `WanVAE` or another codec with ``encode``/``encode_image`` (on its compute device).
        holds: the task's holds.
        media: the pixels, at the output size.
        num_latents: N, latent frames on the timeline.
        keyframe_encoding: ``"image"`` (one-frame latents, Pusa) or ``"video"`` (still-chunk latents).
        geometry: the codec's frame map (how many pixel frames a clip of L latents needs).

    Returns:
        `[1, C, N, h, w]` float32 on the VAE's device (zeros at frames that are not held), or None
        when nothing is held.
    """
    if not holds:
        return None
    pictures: dict[str, torch.Tensor | None] = {"image": media.image}
    pictures.update({f"keyframe:{k}": picture for k, picture in enumerate(media.keyframes)})
    clips = {"video": media.video, "video_b": media.video_b}
    encoded_clips: dict[str, torch.Tensor] = {}
    source: torch.Tensor | None = None
    for hold in holds:
        if hold.source in clips:
            clip = clips[hold.source]
            if clip is None:
                raise _not_given(hold)
            if hold.source not in encoded_clips:
                used = _clip_part(clip, holds, hold.source, geometry)
                encoded_clips[hold.source] = vae.encode(used.unsqueeze(0))[0]
            latent = encoded_clips[hold.source][:, hold.source_frame]
        else:
            picture = pictures.get(hold.source)
            if picture is None:
                raise _not_given(hold)
            latent = _encode_keyframe(vae, picture, hold.frame, keyframe_encoding, geometry)
        if source is None:
            source = latent.new_zeros(1, latent.shape[0], num_latents, *latent.shape[1:])
        source[0, :, hold.frame] = latent
    return source
