"""Scores of one generated toy video against its ground-truth clip, from the model-free tracker.

Per video (`score_video`):

- ``valid``: share of frames that show one square-sized blob with a nose;
- ``error_after_px``: mean centroid error in the `after` generated frames right after the given prefix
  (i2v: frames 1-4; extension: the frames after the given clip; start-end: frames 1-4);
- ``error_generated_px``: mean centroid error over every generated frame (start-end: between the
  keyframes);
- ``fit_px``: RMS residual of the best straight constant-speed path ``c(t) = a + v t`` through the
  valid centroids (the world's motion law); ``speed``: ``|v|`` in pixels per frame;
- ``direction_ok``: the fitted motion points the reference way (the true direction for conditioned
  tasks; for t2v, the heading the generated frames themselves show). Motion slower than a quarter of the
  world's speed has no direction and counts as wrong, so a static video scores 0;
- ``psnr_given_db``: PSNR of the given frames in the output against the inputs (capped at `PSNR_CAP`).

In a world with ``walls="bounce"`` the fit, speed and direction are taken on the *unfolded* track
(`pusa_fw_toy.walls.unfold_centres`: each turn of the nose mirrors the later positions about the wall
the nose pointed at), so a square that bounces by the world's law is one straight constant-speed path
in its first heading, and a turn away from a wall, or a bounce the nose does not show, leaves a
residual in ``fit_px``; ``direction_ok`` then compares with the clip's first direction (truth) or the
heading most frames show once unfolded (`pusa_fw_toy.walls.unfold_words`: each word after a turn at a wall
read back into the first heading's frame). On a clip without contacts that is exactly the wall-less
reference, the heading most frames show. Centroid errors are always against the true (folded) centres.

Frames the tracker cannot read are left out of the error means (``valid`` reports them); a video with
fewer than three valid frames has no fit and no direction.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from pusa_fw_toy.tracker import Track, track_video
from pusa_fw_toy.walls import unfold_centres, unfold_words, wall_limits
from pusa_fw_toy.world import DIRECTIONS, WorldClip, WorldConfig

__all__ = [
    "PSNR_CAP", "fit_motion", "motion_direction", "psnr", "score_video", "shown_heading", "unfolded_heading",
    "unfolded_track",
]

PSNR_CAP = 100.0
_UNITS = torch.tensor(list(DIRECTIONS.values()), dtype=torch.float64)
_NAMES = list(DIRECTIONS)


def fit_motion(track: Track) -> tuple[torch.Tensor, float]:
    """Least-squares straight path through the valid centroids.

    Returns:
        ``(velocity [2], rms residual in px)``; NaNs when fewer than three frames are valid.
    """
    frames = track.valid.nonzero().squeeze(1)
    if frames.numel() < 3:
        return torch.full((2,), float("nan"), dtype=torch.float64), float("nan")
    times = frames.to(torch.float64)
    design = torch.stack([torch.ones_like(times), times], dim=1)
    points = track.centres[frames]
    solution = torch.linalg.lstsq(design, points).solution
    residual = points - design @ solution
    return solution[1], float(residual.pow(2).sum(dim=1).mean().sqrt())


def motion_direction(velocity: torch.Tensor, min_speed: float) -> str | None:
    """The direction word of `velocity`, or None when it is slower than `min_speed` (or NaN)."""
    speed = float(velocity.norm())
    if not math.isfinite(speed) or speed < min_speed:
        return None
    return _NAMES[int((_UNITS @ velocity).argmax())]


def psnr(video: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB of two [-1, 1] videos (peak-to-peak 2), capped at `PSNR_CAP` (identical videos)."""
    mse = float((video.to(torch.float64) - reference.to(torch.float64)).pow(2).mean())
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * math.log10(4.0 / mse))


def _mean(values: torch.Tensor) -> float:
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else float("nan")


def shown_heading(track: Track) -> str | None:
    """The direction word the nose points in most valid frames (None when no frame is valid)."""
    counted = [word for word in track.direction_words() if word is not None]
    return max(set(counted), key=counted.count) if counted else None


def unfolded_track(track: Track, world: WorldConfig) -> Track:
    """`track` with its centres unfolded off the walls (unchanged when the world has none)."""
    if world.walls == "none":
        return track
    low, high = wall_limits(world.size, world.square)
    centres = unfold_centres(track.centres, track.direction_words(), low, high)
    return Track(centres=centres, headings=track.headings, valid=track.valid, mass=track.mass)


def unfolded_heading(track: Track) -> str | None:
    """The word most valid frames show once unfolded off the walls (None when no frame is valid; a tie goes
    to the word shown first)."""
    counted = Counter(word for word in unfold_words(track.direction_words()) if word is not None)
    return counted.most_common(1)[0][0] if counted else None


def score_video(video: torch.Tensor, clip: WorldClip, world: WorldConfig, given: Sequence[int], *,
                after: int = 4, reference: str = "truth") -> dict[str, Any]:
    """Score a generated video against the clip it was conditioned on.

    Args:
        video: `[3, T, H, W]` generated video in [-1, 1].
        clip: the ground-truth clip (same T).
        world: the world.
        given: pixel frames that were given to the model (empty for t2v).
        after: how many generated frames after the given prefix `error_after_px` covers.
        reference: ``"truth"`` (direction of the clip) or ``"heading"`` (the heading the video shows).

    Returns:
        The metrics of the module docstring (floats; NaN where undefined) plus ``direction`` (the fitted
        motion's word or None).
    """
    if video.shape != clip.video.shape:
        raise ValueError(f"video {tuple(video.shape)} and clip {tuple(clip.video.shape)} differ in shape")
    track = track_video(video, world)
    frames = video.shape[1]
    given_set = set(given)
    generated = [t for t in range(frames) if t not in given_set]
    errors = (track.centres - clip.centres).norm(dim=1)
    prefix_end = 0
    while prefix_end in given_set:
        prefix_end += 1
    after_frames = [t for t in range(prefix_end, min(frames, prefix_end + after)) if t not in given_set]
    velocity, residual = fit_motion(unfolded_track(track, world))
    moving = motion_direction(velocity, 0.25 * world.speed)
    if reference == "truth":
        wanted = clip.direction
    else:
        wanted = shown_heading(track) if world.walls == "none" else unfolded_heading(track)
    return {
        "valid": float(track.valid.to(torch.float64).mean()),
        "error_after_px": _mean(errors[after_frames]) if given_set and after_frames else float("nan"),
        "error_generated_px": _mean(errors[generated]) if given_set and generated else float("nan"),
        "fit_px": residual,
        "speed": float(velocity.norm()),
        "direction_ok": float(moving is not None and moving == wanted),
        "direction": moving,
        "psnr_given_db": psnr(video[:, sorted(given_set)], clip.video[:, sorted(given_set)]) if given_set
        else float("nan"),
    }
