"""Conditioning media and the source latents a task's holds take from them, for any codec.

A task's `Hold` list says which latent frame of the timeline takes its content from which input
(``"image"``, ``"keyframe:K"``, ``"video"``, ``"video_b"``) and from which latent of that input's own
encoding. `encode_sources` turns the inputs into one source tensor `[1, C, N, h, w]` with those latents at
the held frames (zeros elsewhere; the sampler reads held frames only), through any codec with ``encode``
(clips `[B, 3, T, H, W]`) and ``encode_image`` (pictures `[B, 3, H, W]`):

- an image or keyframe is encoded on its own as a one-frame video (Pusa's rule), wherever it is placed;
  with ``keyframe_encoding="video"`` a keyframe at latent k >= 1 is instead encoded as a still clip of two
  latent frames and its second latent is used, a latent of the temporal-chunk kind that latent k is;
- a clip is encoded once (causally, in its own temporal context; clip B of a transition is encoded
  separately from clip A), as many frames as its held latents need. Which end of the clip is used is what
  its holds declare (`Hold.clip_end`): the *last* frames of a clip the video continues (extension,
  transition clip A), the *first* frames otherwise (v2v, transition clip B).

Reading the media from files stays with the pipelines (e.g. ``pusa_fw_wan.pipeline.media.load_media``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .errors import InputError
from .geometry import WAN21_GEOMETRY, LatentGeometry
from .task import Hold

__all__ = [
    "ConditioningMedia", "KeyframeEncoding", "clip_end", "clip_pixel_frames", "encode_sources", "sources_of",
]

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


def _encode_keyframe(codec: Any, picture: torch.Tensor, latent_frame: int, encoding: KeyframeEncoding,
                     geometry: LatentGeometry) -> torch.Tensor:
    """`[C, h, w]` latent of one picture `[3, H, W]` for latent frame `latent_frame`.

    ``"video"`` encodes a still clip of two latent frames and keeps the second (a full temporal group).
    """
    batch = picture.unsqueeze(0)
    if encoding == "image" or latent_frame == 0:
        return codec.encode_image(batch)[0, :, 0]
    still = batch.unsqueeze(2).expand(-1, -1, geometry.num_frames(2), -1, -1)
    return codec.encode(still)[0, :, 1]


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
    vae: Any,
    holds: Sequence[Hold],
    media: ConditioningMedia,
    num_latents: int,
    *,
    keyframe_encoding: KeyframeEncoding = "image",
    geometry: LatentGeometry = WAN21_GEOMETRY,
) -> torch.Tensor | None:
    """Encode the held inputs into the source latents of the timeline.

    Args:
        vae: the codec, with ``encode`` (`[B, 3, T, H, W]` -> `[B, C, F, h, w]`) and ``encode_image``
            (`[B, 3, H, W]` -> `[B, C, 1, h, w]`), on its compute device.
        holds: the task's holds.
        media: the pixels, at the output size.
        num_latents: N, latent frames on the timeline.
        keyframe_encoding: ``"image"`` (one-frame latents, Pusa) or ``"video"`` (still-chunk latents).
        geometry: the codec's frame map (how many pixel frames a clip of L latents needs).

    Returns:
        `[1, C, N, h, w]` on the codec's device (zeros at frames that are not held), or None when nothing
        is held.

    Raises:
        InputError: a held input is not given, or a clip is too short.
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
