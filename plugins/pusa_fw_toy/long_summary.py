"""Row metrics of a set of long videos: what the long-video table, drift plot and gates read.

Given the per-frame `LongScore` of every video of a row (same length T):

| key                     | meaning                                                                        |
|-------------------------|--------------------------------------------------------------------------------|
| valid                   | share of all frames (every video) the tracker reads                            |
| colour_kept             | share of valid frames whose body shows the clip's colour                       |
| size_kept               | share of valid frames with the square's area (`long_metrics.SIZE_TOLERANCE`)    |
| inside                  | share of valid frames with the whole square in the frame                       |
| speed_kept_videos       | share of videos whose median step is 0.8-1.2 x speed in every 8-frame segment   |
| speed_median            | median unfolded step over every readable step, px/frame                        |
| direction_segments      | share of 8-frame segments (every video) whose motion agrees with the nose       |
| turns                   | turned / wall contacts, over every video (NaN without contacts)                |
| contacts_per_video      | wall contacts per video                                                         |
| valid_gap               | valid over frames 2-9 minus valid over the last 8, absolute                     |
| speed_gap               | mean step over frames 2-9 minus over the last 8, absolute, / speed              |
| trajectory_error_px     | mean distance from the true bounced centre (reported, not gated)               |
| seam_px                 | loops: median of each video's seam error (NaN otherwise)                       |
| seam_within_1px         | loops: share of videos with a seam error <= 1 px                                |

``curves`` keeps per-frame means over the videos (valid, colour kept, speed, trajectory error) for the
drift plot. Frames are 0-based in the code; "frames 2-9" are the steps into frames 1..8.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from pusa_fw_toy.long_metrics import SEGMENT, LongScore, finite_mean
from pusa_fw_toy.world import WorldConfig

__all__ = ["SPEED_BAND", "summarise_long"]

SPEED_BAND = (0.8, 1.2)
"""Median step per segment, as a multiple of the world's speed, that counts as speed kept."""


def _nan_to_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _curve(values: torch.Tensor) -> list[float | None]:
    """`[N, T]` -> per-frame finite mean (None where no video has a finite value)."""
    finite = torch.isfinite(values)
    total = torch.where(finite, values, torch.zeros_like(values)).sum(dim=0)
    count = finite.sum(dim=0)
    return [float(t / c) if c else None for t, c in zip(total, count)]


def summarise_long(scores: Sequence[LongScore], world: WorldConfig) -> dict[str, Any]:
    """The row metrics and curves of the module docstring (None where undefined)."""
    if not scores:
        raise ValueError("no videos to summarise")
    valid = torch.stack([score.valid for score in scores]).to(torch.float64)
    valid_frames = valid.sum()
    steps = torch.stack([score.step_px for score in scores])
    errors = torch.stack([score.error_px for score in scores])
    low, high = SPEED_BAND[0] * world.speed, SPEED_BAND[1] * world.speed
    kept = [bool(((score.segment_speed >= low) & (score.segment_speed <= high)).all()) for score in scores]
    directions = torch.cat([score.segment_direction_ok for score in scores]).to(torch.float64)
    contacts = sum(score.contacts for score in scores)
    turned = sum(score.turned for score in scores)
    frames = valid.shape[1]
    start, end = slice(1, 1 + SEGMENT), slice(frames - SEGMENT, frames)
    seams = [score.seam_px for score in scores]
    finite_seams = sorted(seam for seam in seams if math.isfinite(seam))
    looped = any(math.isfinite(seam) for seam in seams)

    def share(mask_name: str) -> float:
        counted = torch.stack([getattr(score, mask_name) for score in scores]).to(torch.float64).sum()
        return float(counted / valid_frames) if valid_frames > 0 else math.nan

    metrics = {
        "videos": len(scores),
        "valid": float(valid.mean()),
        "colour_kept": share("colour_ok"),
        "size_kept": share("size_ok"),
        "inside": share("inside"),
        "speed_kept_videos": sum(kept) / len(kept),
        "speed_median": float(steps[torch.isfinite(steps)].median()) if torch.isfinite(steps).any() else math.nan,
        "direction_segments": float(directions.mean()),
        "turns": turned / contacts if contacts else math.nan,
        "contacts_per_video": contacts / len(scores),
        "valid_gap": abs(float(valid[:, start].mean()) - float(valid[:, end].mean())),
        "speed_gap": abs(finite_mean(steps[:, start]) - finite_mean(steps[:, end])) / world.speed,
        "trajectory_error_px": finite_mean(errors),
        "seam_px": finite_seams[len(finite_seams) // 2] if looped and finite_seams else math.nan,
        "seam_within_1px": sum(seam <= 1.0 for seam in finite_seams) / len(seams) if looped else math.nan,
    }
    curves = {
        "valid": _curve(valid),
        "colour_kept": _curve(torch.stack([score.colour_ok for score in scores]).to(torch.float64)
                              .masked_fill(valid == 0, math.nan)),
        "speed": _curve(steps),
        "trajectory_error_px": _curve(errors),
    }
    return {"metrics": {key: _nan_to_none(value) if isinstance(value, float) else value
                        for key, value in metrics.items()}, "curves": curves}
