"""The toy world: a coloured square with a white nose that moves the way its nose points.

Every clip is a pure function of a `WorldConfig` and an integer seed, rendered on the fly:

- a `size` x `size` black frame and one `square` x `square` square of a palette colour (red, green or
  blue), whose front strip of `nose` pixels is white, so the heading is readable from any single frame;
- the square moves in a straight line in the direction its nose points (right, left, up or down) at a
  fixed `speed` pixels per frame. With ``walls="none"`` (the default) it stays fully inside the frame
  for the whole clip without touching a wall (the start is drawn so it fits); with ``walls="bounce"`` it
  starts anywhere it fits and a move past an edge is folded back, the nose turning around in that same
  frame (`pusa_fw_toy.walls`), so clips can be of any length;
- the caption names the colour (``"a red square"``); with ``caption_direction`` it also names the
  direction (``"a red square moving left"``).

Positions are continuous. Pixels are rendered by exact area coverage (the square's edges are axis
aligned, so the coverage of a pixel is the product of two interval overlaps), which makes the
coverage-weighted centroid of a frame equal to the square's true centre. Coordinates are ``(x, y)`` in
pixels with ``x`` to the right, ``y`` downwards, and pixel ``(row i, column j)`` covering
``[j, j + 1] x [i, i + 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pusa_fw_toy.walls import bounce_path, wall_limits

__all__ = [
    "BACKGROUND", "COLOURS", "DIRECTIONS", "HELD_OUT_SEED_BASE", "NOSE_COLOUR", "WorldClip", "WorldConfig",
    "render_clip", "render_headed", "render_square",
]

BACKGROUND = (-1.0, -1.0, -1.0)
NOSE_COLOUR = (1.0, 1.0, 1.0)
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, -1.0, -1.0),
    "green": (-1.0, 1.0, -1.0),
    "blue": (-1.0, -1.0, 1.0),
}
"""Body colours in [-1, 1]; each lights exactly one channel (the tracker relies on that)."""
DIRECTIONS: dict[str, tuple[float, float]] = {
    "right": (1.0, 0.0), "left": (-1.0, 0.0), "down": (0.0, 1.0), "up": (0.0, -1.0),
}
"""Unit heading ``(dx, dy)`` per direction word (y grows downwards)."""
HELD_OUT_SEED_BASE = 1_000_000_000
"""Evaluation seeds start here; training sources draw seeds below it."""


class WorldConfig(BaseModel):
    """Size and rules of the toy world (all lengths in pixels).

    Attributes:
        size: frame height and width.
        num_frames: pixel frames per clip.
        square: side of the square.
        nose: thickness of the white front strip (less than `square`).
        speed: distance moved per frame, in the heading direction.
        colours: palette names used (a subset of `COLOURS`).
        caption_direction: whether the caption names the direction too.
        walls: ``"none"`` (the clip is drawn so the square never reaches an edge) or ``"bounce"`` (the
            square folds back off the edges; needs ``speed <= size - square``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int = Field(16, ge=4, description="frame height and width in pixels")
    num_frames: int = Field(9, ge=2, description="pixel frames per clip")
    square: float = Field(5.0, gt=1, description="side of the square in pixels")
    nose: float = Field(1.0, gt=0, description="thickness of the white front strip in pixels")
    speed: float = Field(1.0, ge=0, description="pixels moved per frame")
    colours: tuple[str, ...] = Field(("red", "green", "blue"), min_length=1, description="palette")
    caption_direction: bool = Field(False, description="name the direction in the caption too")
    walls: Literal["none", "bounce"] = Field("none", description="'none' or 'bounce' off the frame's edges")

    @model_validator(mode="after")
    def _fits(self) -> WorldConfig:
        unknown = [name for name in self.colours if name not in COLOURS]
        if unknown:
            raise ValueError(f"colours {unknown} are unknown; choose from {sorted(COLOURS)}")
        if self.nose >= self.square:
            raise ValueError(f"nose={self.nose} must be thinner than square={self.square}")
        if self.walls == "bounce":
            if self.speed > self.size - self.square:
                raise ValueError(
                    f"speed={self.speed} exceeds the room a {self.square}px square has in {self.size}px "
                    f"frames ({self.size - self.square}px) with walls='bounce'; lower speed or square, or "
                    "raise size"
                )
            return self
        travel = self.speed * (self.num_frames - 1)
        if self.square + travel > self.size:
            raise ValueError(
                f"a {self.square}px square moving {travel}px does not fit in {self.size}px frames; "
                "lower speed or num_frames, raise size, or set walls='bounce'"
            )
        return self

    @property
    def travel(self) -> float:
        """Distance covered from the first to the last frame."""
        return self.speed * (self.num_frames - 1)


@dataclass(frozen=True)
class WorldClip:
    """One rendered clip with its ground truth.

    Attributes:
        video: `[3, T, H, W]` float32 in [-1, 1].
        centres: `[T, 2]` float64 true centre ``(x, y)`` of the square in each frame.
        heading: `[2]` float64 unit heading ``(dx, dy)`` in frame 0.
        direction: the direction word of frame 0 (the one the caption may name).
        colour: the colour word.
        caption: the caption.
        seed: the seed it was drawn from.
        headings: `[T, 2]` float64 heading (where the nose points) in each frame; with walls it turns
            around in the frame of each wall contact, without walls it is `heading` in every frame.
        directions: the direction word of each frame.
    """

    video: torch.Tensor
    centres: torch.Tensor
    heading: torch.Tensor
    direction: str
    colour: str
    caption: str
    seed: int
    headings: torch.Tensor
    directions: tuple[str, ...]


def _coverage(low: torch.Tensor, high: torch.Tensor, size: int) -> torch.Tensor:
    """`[T, size]` overlap of intervals `[low, high]` (each `[T]`) with the unit pixels 0..size-1."""
    edges = torch.arange(size, dtype=torch.float64)
    return (torch.minimum(high[:, None], edges + 1) - torch.maximum(low[:, None], edges)).clamp(min=0)


def _rectangle(x0: torch.Tensor, x1: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor, size: int) -> torch.Tensor:
    """`[T, size, size]` area coverage of axis-aligned rectangles ``[x0, x1] x [y0, y1]``."""
    return _coverage(y0, y1, size)[:, :, None] * _coverage(x0, x1, size)[:, None, :]


def render_square(config: WorldConfig, centres: torch.Tensor, heading: tuple[float, float],
                  colour: str) -> torch.Tensor:
    """Render the square at `centres` with its nose towards `heading`.

    Args:
        config: the world.
        centres: `[T, 2]` centres ``(x, y)``.
        heading: one of the `DIRECTIONS` values.
        colour: a `COLOURS` name.

    Returns:
        `[3, T, size, size]` float32 video in [-1, 1].
    """
    centres = centres.to(torch.float64)
    half, size = config.square / 2, config.size
    x, y = centres[:, 0], centres[:, 1]
    left, right, top, bottom = x - half, x + half, y - half, y + half
    dx, dy = heading
    cut = config.nose
    if dx > 0:
        nose, body = (right - cut, right, top, bottom), (left, right - cut, top, bottom)
    elif dx < 0:
        nose, body = (left, left + cut, top, bottom), (left + cut, right, top, bottom)
    elif dy > 0:
        nose, body = (left, right, bottom - cut, bottom), (left, right, top, bottom - cut)
    else:
        nose, body = (left, right, top, top + cut), (left, right, top + cut, bottom)
    nose_cover, body_cover = _rectangle(*nose, size), _rectangle(*body, size)
    background = torch.tensor(BACKGROUND, dtype=torch.float64).view(3, 1, 1, 1)
    body_colour = torch.tensor(COLOURS[colour], dtype=torch.float64).view(3, 1, 1, 1)
    nose_colour = torch.tensor(NOSE_COLOUR, dtype=torch.float64).view(3, 1, 1, 1)
    video = (background + body_cover[None] * (body_colour - background)
             + nose_cover[None] * (nose_colour - background))
    return video.to(torch.float32)


def render_headed(config: WorldConfig, centres: torch.Tensor, headings: torch.Tensor,
                  colour: str) -> torch.Tensor:
    """Render the square at `centres` with a nose per frame.

    Args:
        config: the world.
        centres: `[T, 2]` centres ``(x, y)``.
        headings: `[T, 2]` per-frame headings, each one of the `DIRECTIONS` values.
        colour: a `COLOURS` name.

    Returns:
        `[3, T, size, size]` float32 video in [-1, 1].
    """
    video = torch.empty(3, centres.shape[0], config.size, config.size, dtype=torch.float32)
    covered = torch.zeros(centres.shape[0], dtype=torch.bool)
    for unit in DIRECTIONS.values():
        frames = (headings.to(torch.float64) == torch.tensor(unit, dtype=torch.float64)).all(dim=1)
        if bool(frames.any()):
            video[:, frames] = render_square(config, centres[frames], unit, colour)
            covered |= frames
    if not bool(covered.all()):
        frames = (~covered).nonzero().flatten().tolist()
        raise ValueError(
            f"headings of frames {frames} are not DIRECTIONS values; use right, left, down or up"
        )
    return video


def _word(heading: torch.Tensor) -> str:
    """The `DIRECTIONS` word of an axis-aligned unit heading."""
    return next(name for name, unit in DIRECTIONS.items() if tuple(float(v) for v in heading) == unit)


def render_clip(config: WorldConfig, seed: int, num_frames: int | None = None) -> WorldClip:
    """Draw colour, direction and start position from `seed` and render the clip.

    Without walls the start is uniform over the positions that keep the whole square inside the frame
    for the whole clip; with ``walls="bounce"`` it is uniform over every position where the square fits,
    and the path folds off the edges (`pusa_fw_toy.walls.bounce_path`). The same config and seed always
    give the same clip, bit for bit.

    Args:
        config: the world.
        seed: any integer >= 0.
        num_frames: clip length; None takes the world's ``num_frames`` (another length is checked
            against the world's rules like the world's own).

    Returns:
        The `WorldClip`.
    """
    if num_frames is not None and num_frames != config.num_frames:
        config = WorldConfig(**{**config.model_dump(), "num_frames": num_frames})
    generator = torch.Generator().manual_seed(int(seed))
    colour = config.colours[int(torch.randint(len(config.colours), (1,), generator=generator))]
    direction = list(DIRECTIONS)[int(torch.randint(len(DIRECTIONS), (1,), generator=generator))]
    heading = DIRECTIONS[direction]
    half = config.square / 2
    free = torch.rand(2, generator=generator, dtype=torch.float64)
    lowest = torch.full((2,), half, dtype=torch.float64)
    span = torch.full((2,), config.size - config.square, dtype=torch.float64)
    unit = torch.tensor(heading, dtype=torch.float64)
    caption = f"a {colour} square" + (f" moving {direction}" if config.caption_direction else "")
    if config.walls == "bounce":
        low, high = wall_limits(config.size, config.square)
        start = lowest + free * span
        centres, headings = bounce_path(start, unit, config.speed, low, high, config.num_frames)
        video = render_headed(config, centres, headings, colour)
    else:
        step = unit * config.speed
        span = span - step.abs() * (config.num_frames - 1)
        start = lowest + free * span - torch.clamp(step, max=0) * (config.num_frames - 1)
        times = torch.arange(config.num_frames, dtype=torch.float64)[:, None]
        centres = start + times * step
        headings = unit.expand(config.num_frames, 2).clone()
        video = render_square(config, centres, heading, colour)
    return WorldClip(
        video=video, centres=centres, heading=unit, direction=direction, colour=colour, caption=caption,
        seed=int(seed), headings=headings, directions=tuple(_word(row) for row in headings),
    )
