"""A tracker that needs no model: per frame, where the square is, where its nose points, and whether
the frame shows one square at all.

It inverts the world's colour rules (`pusa_fw_toy.world`): over the black background every body colour
lights exactly one channel and the nose lights all three, so with the per-channel offsets
``o = pixel + 1`` (each in [0, 2]) a pixel that is a fraction ``a`` body and ``b`` nose has

- shape coverage ``a + b = sum(o) / 2 - median(o)``, and
- nose coverage ``b = median(o) / 2``.

Both are linear in the coverages, so on a clean frame the coverage-weighted centroid is the square's
true centre (to float rounding), however the square sits on the pixel grid. On a generated frame the
weights are clamped to [0, 1] and the centroid is refined inside a window around the strongest
square-sized blob, so faint noise elsewhere does not pull it.

A frame is *valid* when the window holds a square's worth of coverage (within `mass_tolerance`) and at
least `concentration` of all the coverage in the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pusa_fw_toy.world import DIRECTIONS, WorldConfig

__all__ = ["Track", "coverage_maps", "track_video"]


@dataclass(frozen=True)
class Track:
    """What the tracker found in a video of T frames (float64, NaN where a frame is not valid).

    Attributes:
        centres: `[T, 2]` centroid ``(x, y)`` in pixels.
        headings: `[T, 2]` unit vector from the centroid towards the nose centroid.
        valid: `[T]` bool, the frame shows one square-sized blob.
        mass: `[T]` shape coverage inside the window, in units of the square's area.
    """

    centres: torch.Tensor
    headings: torch.Tensor
    valid: torch.Tensor
    mass: torch.Tensor

    def direction_words(self) -> list[str | None]:
        """Per frame, the `DIRECTIONS` word closest to the heading (None where not valid)."""
        names = list(DIRECTIONS)
        units = torch.tensor([DIRECTIONS[name] for name in names], dtype=torch.float64)
        words: list[str | None] = []
        for heading, valid in zip(self.headings, self.valid):
            words.append(names[int((units @ heading).argmax())] if bool(valid) else None)
        return words


def coverage_maps(video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shape and nose coverage per pixel.

    Args:
        video: `[3, T, H, W]` in [-1, 1].

    Returns:
        ``(shape, nose)``, each `[T, H, W]` float64 (unclamped).
    """
    offsets = video.to(torch.float64) + 1.0
    median = offsets.median(dim=0).values
    return offsets.sum(dim=0) / 2 - median, median / 2


def _centroid(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroid ``(x, y)`` `[T, 2]` (pixel centres at +0.5) and mass `[T]` of `[T, H, W]` weights."""
    rows = torch.arange(weights.shape[1], dtype=torch.float64) + 0.5
    columns = torch.arange(weights.shape[2], dtype=torch.float64) + 0.5
    mass = weights.sum(dim=(1, 2))
    safe = torch.where(mass > 0, mass, torch.ones_like(mass))
    x = (weights.sum(dim=1) * columns).sum(dim=1) / safe
    y = (weights.sum(dim=2) * rows).sum(dim=1) / safe
    return torch.stack([x, y], dim=1), mass


def _window_masks(shape: torch.Tensor, box_half: int, half_width: int) -> torch.Tensor:
    """`[T, H, W]` bool: a (2 half_width + 1)^2 window around the pixel whose (2 box_half + 1)^2 box
    holds the most coverage (the square's centre to within a pixel)."""
    frames, height, width = shape.shape
    pooled = F.avg_pool2d(shape.clamp(0, 1)[:, None], 2 * box_half + 1, stride=1, padding=box_half,
                          count_include_pad=True)[:, 0]
    best = pooled.flatten(1).argmax(dim=1)
    rows, columns = best // width, best % width
    grid_rows = torch.arange(height)[None, :, None]
    grid_columns = torch.arange(width)[None, None, :]
    return ((grid_rows - rows[:, None, None]).abs() <= half_width) & (
        (grid_columns - columns[:, None, None]).abs() <= half_width
    )


def track_video(video: torch.Tensor, config: WorldConfig, *, mass_tolerance: float = 0.3,
                concentration: float = 0.75) -> Track:
    """Track the square through `video`.

    Args:
        video: `[3, T, H, W]` in [-1, 1] (a world clip or a generated video).
        config: the world the video should follow (square size).
        mass_tolerance: allowed relative deviation of the window's coverage from the square's area.
        concentration: the least share of the frame's coverage the window must hold.

    Returns:
        The `Track`.
    """
    if video.dim() != 4 or video.shape[0] != 3:
        raise ValueError(f"video must be [3, T, H, W], got {tuple(video.shape)}")
    shape, nose = coverage_maps(video)
    box_half = int(config.square // 2)
    window = _window_masks(shape, box_half, box_half + 2)
    shape_weights = torch.where(window, shape.clamp(0, 1), torch.zeros_like(shape))
    nose_weights = torch.where(window, nose.clamp(0, 1), torch.zeros_like(nose))
    centres, mass = _centroid(shape_weights)
    nose_centres, nose_mass = _centroid(nose_weights)
    area = config.square**2
    total = shape.clamp(0, 1).sum(dim=(1, 2))
    relative = mass / area
    valid = ((relative - 1).abs() <= mass_tolerance) & (mass >= concentration * total) & (nose_mass > 0)
    pointing = nose_centres - centres
    length = pointing.norm(dim=1, keepdim=True)
    headings = pointing / torch.where(length > 0, length, torch.ones_like(length))
    valid = valid & (length[:, 0] > 0)
    nan = torch.full_like(centres, float("nan"))
    return Track(
        centres=torch.where(valid[:, None], centres, nan),
        headings=torch.where(valid[:, None], headings, nan),
        valid=valid,
        mass=relative,
    )
