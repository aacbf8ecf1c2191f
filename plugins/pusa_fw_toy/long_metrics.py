"""Per-frame scores of one long toy video (65+ frames), read by the model-free tracker.

A long video drifts: it may start well and lose the square, its colour or its speed later, or stop at a
wall. So every score here is kept per frame (or per step, or per 8-frame segment), not only per video:

- ``valid[t]``: the tracker reads one square-sized blob with a nose in frame t;
- ``colour_ok[t]``: the body lights the channel of the clip's colour (valid frames only);
- ``size_ok[t]``: the blob's coverage is within `SIZE_TOLERANCE` of the square's area (valid frames);
- ``inside[t]``: the whole square is in the frame, to `INSIDE_SLACK_PX` (valid frames);
- ``step_px[t]`` (t >= 1): the distance moved from frame t - 1 to t on the *unfolded* track
  (`pusa_fw_toy.metrics.unfolded_track`), so a clean bounce moves ``speed`` in its contact frame too;
- ``error_px[t]``: distance of the centre from the true bounced path (reported, not gated: a small speed
  error accumulates over 65 frames);
- per 8-frame segment of steps: the median ``step_px`` (``segment_speed``) and whether the motion agrees
  with the nose (``segment_direction_ok``: most of the segment's steps that do not turn move the way the
  nose points, by at least a quarter of the world's speed);
- wall contacts: a valid frame whose nose points at a wall closer than one frame's move is a contact
  (the next move must fold); it ``turned`` when the nose shows the opposite word within the next two
  frames (the fold's frame, or one frame late). A square that stays at a wall is one contact, not many;
- ``seam_px``: for a loop, how far the last-frame-to-first-frame move is from one frame's move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pusa_fw_toy.metrics import unfolded_track
from pusa_fw_toy.tracker import Track, coverage_maps, track_video
from pusa_fw_toy.walls import AXIS, OPPOSITE, WALL_SIDE, wall_limits
from pusa_fw_toy.world import COLOURS, DIRECTIONS, WorldClip, WorldConfig

__all__ = ["INSIDE_SLACK_PX", "SEGMENT", "SIZE_TOLERANCE", "LongScore", "finite_mean", "score_long_video", "segments"]

SEGMENT = 8
"""Steps per segment of the speed and direction scores."""
SIZE_TOLERANCE = 0.15
"""Largest relative deviation of the blob's coverage from the square's area that keeps the size."""
INSIDE_SLACK_PX = 0.5
"""How far past an edge a tracked square may reach and still count as inside (tracker rounding)."""


@dataclass(frozen=True)
class LongScore:
    """Per-frame scores of one long video (T frames; NaN / False where a frame is not valid).

    Attributes:
        valid: `[T]` bool.
        colour_ok: `[T]` bool (False where not valid).
        size_ok: `[T]` bool (False where not valid).
        inside: `[T]` bool (False where not valid).
        step_px: `[T]` float64, unfolded distance from frame t - 1 (NaN at t = 0 and next to invalid frames).
        error_px: `[T]` float64 distance from the true centre.
        segment_speed: `[S]` float64 median `step_px` per segment (NaN when no step is readable).
        segment_direction_ok: `[S]` bool.
        contacts: wall contacts found.
        turned: of them, those where the nose turned back in time.
        seam_px: loop seam error (NaN unless scored as a loop, or an end frame is not valid).
    """

    valid: torch.Tensor
    colour_ok: torch.Tensor
    size_ok: torch.Tensor
    inside: torch.Tensor
    step_px: torch.Tensor
    error_px: torch.Tensor
    segment_speed: torch.Tensor
    segment_direction_ok: torch.Tensor
    contacts: int
    turned: int
    seam_px: float


def segments(num_frames: int) -> list[range]:
    """Step indices (1 .. T - 1) cut into consecutive runs of `SEGMENT` (the last may be shorter)."""
    return [range(start, min(start + SEGMENT, num_frames)) for start in range(1, num_frames, SEGMENT)]


def _body_channels(video: torch.Tensor, track: Track) -> torch.Tensor:
    """`[T]` index of the channel the body lights most (coverage minus the nose's share), per frame."""
    offsets = (video.to(torch.float64) + 1.0).clamp(0, 2)
    _, nose = coverage_maps(video)
    body = offsets - 2 * nose.clamp(0, 1)[None]  # the nose lights every channel by 2 * its coverage
    return body.clamp(min=0).sum(dim=(2, 3)).argmax(dim=0)


def _contacts(track: Track, world: WorldConfig) -> tuple[int, int]:
    """``(contacts, turned)`` read from the tracked centres and nose words."""
    low, high = wall_limits(world.size, world.square)
    words = track.direction_words()
    contacts = turned = 0
    touching = False
    for frame, word in enumerate(words):
        if word is None:
            touching = False
            continue
        position = float(track.centres[frame, AXIS[word]])
        room = high - position if WALL_SIDE[word] else position - low
        at_wall = room < world.speed
        if at_wall and not touching and frame + 2 < len(words):
            contacts += 1
            turned += OPPOSITE[word] in words[frame + 1: frame + 3]
        touching = at_wall
    return contacts, turned


def _direction_ok(track: Track, steps: range, world: WorldConfig) -> bool:
    """Most of the readable steps in `steps` that keep their nose move the way it points (a segment whose
    readable steps all turn, e.g. a last one-step segment at a wall, agrees; one with none readable does not)."""
    words = track.direction_words()
    readable = scored = agreeing = 0
    for frame in steps:
        before, after = words[frame - 1], words[frame]
        readable += before is not None and after is not None
        if before is None or after is None or before != after:
            continue
        move = track.centres[frame] - track.centres[frame - 1]
        scored += 1
        along = float(move @ torch.tensor(DIRECTIONS[after], dtype=torch.float64))
        agreeing += along >= 0.25 * world.speed and along >= 0.5 * float(move.norm())
    return agreeing * 2 > scored if scored else readable > 0


def score_long_video(video: torch.Tensor, clip: WorldClip, world: WorldConfig, *,
                     loop: bool = False) -> LongScore:
    """Score `video` frame by frame against `clip` (see the module docstring).

    Args:
        video: `[3, T, H, W]` in [-1, 1].
        clip: the true clip of the same length (its colour, its bounced path).
        world: the world (``walls="bounce"`` for the wall scores to mean anything).
        loop: also score the seam from the last frame back to the first.

    Returns:
        The `LongScore`.
    """
    if video.shape != clip.video.shape:
        raise ValueError(f"video {tuple(video.shape)} and clip {tuple(clip.video.shape)} differ in shape")
    track = track_video(video, world)
    valid = track.valid
    channel = [index for index, value in enumerate(COLOURS[clip.colour]) if value > 0][0]
    colour_ok = valid & (_body_channels(video, track) == channel)
    size_ok = valid & ((track.mass - 1).abs() <= SIZE_TOLERANCE)
    half = world.square / 2
    centres = track.centres
    inside = valid & ((centres - half >= -INSIDE_SLACK_PX) & (centres + half <= world.size + INSIDE_SLACK_PX)).all(1)
    unfolded = unfolded_track(track, world).centres
    step_px = torch.full((video.shape[1],), float("nan"), dtype=torch.float64)
    step_px[1:] = (unfolded[1:] - unfolded[:-1]).norm(dim=1)
    parts = segments(video.shape[1])
    speeds = []
    for part in parts:
        readable = step_px[list(part)]
        readable = readable[torch.isfinite(readable)]
        speeds.append(float(readable.median()) if readable.numel() else float("nan"))
    contacts, turned = _contacts(track, world)
    seam = float("nan")
    if loop and bool(valid[0]) and bool(valid[-1]):
        seam = abs(float((centres[0] - centres[-1]).norm()) - world.speed)
    return LongScore(
        valid=valid, colour_ok=colour_ok, size_ok=size_ok, inside=inside, step_px=step_px,
        error_px=(centres - clip.centres).norm(dim=1),
        segment_speed=torch.tensor(speeds, dtype=torch.float64),
        segment_direction_ok=torch.tensor([_direction_ok(track, part, world) for part in parts]),
        contacts=contacts, turned=turned, seam_px=seam,
    )


def finite_mean(values: torch.Tensor) -> float:
    """Mean of the finite entries (NaN when there are none)."""
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else math.nan
