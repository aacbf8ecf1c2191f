"""`TimestepSchedule`: a base sigma grid over frames and steps, and the Wan/Pusa shifted sigma sequence.

A schedule is a frozen pydantic model (its fields are its parameters) with one method,
``grid(num_latent_frames, num_steps) -> [S + 1, F]``: row 0 is the start, row S is all zeros, every column is
non-increasing. Conditioning, windows and held frames are added later, when a task compiles a plan.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from .errors import PlanError
from .flow import SIGMA_DTYPE


MAX_NUM_STEPS = 10_000
"""More steps than any sampler needs (Wan uses 50); a larger count is a typo, not a request."""
MAX_PLAN_CELLS = 20_000_000
"""Steps x latent frames of one plan: a 10-minute rolling video at 30 steps per window is ~9M cells."""


def check_plan_size(num_rows: int, num_latent_frames: int) -> None:
    """Refuse a plan too large to hold before anything is allocated.

    Args:
        num_rows: steps (grid rows) of the plan.
        num_latent_frames: latent frames of its timeline.

    Raises:
        PlanError: a count is above `MAX_NUM_STEPS`, or the plan has more than `MAX_PLAN_CELLS` cells.
    """
    if num_rows > MAX_NUM_STEPS:
        raise PlanError(
            f"a plan of {num_rows} steps is more than {MAX_NUM_STEPS}; use fewer steps (Wan uses 50) or, "
            "for a rolling video, fewer frames"
        )
    if num_rows * num_latent_frames > MAX_PLAN_CELLS:
        raise PlanError(
            f"a plan of {num_rows} steps x {num_latent_frames} latent frames has more than {MAX_PLAN_CELLS} "
            "cells; use fewer frames or steps (or generate the video in parts)"
        )


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """Apply the flow-matching time shift `shift * s / (1 + (shift - 1) * s)` (float64 in, float64 out)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def shifted_sigmas(num_steps: int, shift: float = 5.0, sigma_max: float = 1.0) -> torch.Tensor:
    """The synchronous sequence of Wan and Pusa: `[num_steps + 1]` float64, first `shift(sigma_max)`, last 0.

    ``s = linspace(sigma_max, 0, num_steps + 1)`` shifted, in float64 (`SIGMA_DTYPE`), never rounded.
    ``sigma_max=1`` gives Pusa's Euler grid; ``sigma_max=0.999`` gives Wan's UniPC grid (`set_timesteps`).
    """
    if num_steps < 1:
        raise PlanError(f"num_steps={num_steps} must be >= 1")
    check_plan_size(num_steps, 1)
    if not 0 < shift < float("inf"):
        raise PlanError(f"shift={shift} must be a finite number > 0 (Wan uses 5.0)")
    if not 0 < sigma_max <= 1:
        raise PlanError(f"sigma_max={sigma_max} must be in (0, 1]")
    base = torch.linspace(sigma_max, 0.0, num_steps + 1, dtype=torch.float64)
    return shift_sigmas(base, shift).to(SIGMA_DTYPE)


def check_grid(grid: torch.Tensor, num_latent_frames: int | None = None) -> torch.Tensor:
    """Validate a base grid `[S + 1, F]`: finite, in [0, 1], non-increasing per frame, last row 0.

    Returns:
        The grid as contiguous float64 (`SIGMA_DTYPE`).
    """
    if grid.dim() != 2 or grid.shape[0] < 2:
        raise PlanError(f"a schedule grid must be [S+1, F] with S >= 1, got shape {tuple(grid.shape)}")
    if num_latent_frames is not None and grid.shape[1] != num_latent_frames:
        raise PlanError(f"grid has {grid.shape[1]} frames, expected {num_latent_frames}")
    grid = grid.to(SIGMA_DTYPE).contiguous()
    bad = ~torch.isfinite(grid) | (grid < 0) | (grid > 1)
    if bad.any():
        row, frame = (int(v) for v in bad.nonzero()[0])
        raise PlanError(f"grid[{row}, {frame}] = {float(grid[row, frame])} is not a sigma in [0, 1]")
    rising = grid[1:] > grid[:-1]
    if rising.any():
        row, frame = (int(v) for v in rising.nonzero()[0])
        raise PlanError(f"grid rises for frame {frame} at row {row}; a base grid must be non-increasing")
    if (grid[-1] != 0).any():
        frame = int((grid[-1] != 0).nonzero()[0])
        raise PlanError(f"the last row of a grid must be 0; frame {frame} ends at {float(grid[-1, frame])}")
    return grid


class TimestepSchedule(BaseModel, ABC):
    """A base grid of sigmas over frames and steps.

    Subclasses set ``name`` (the registry name) and ``summary`` and implement `build`. Their parameters
    are pydantic fields, so they validate themselves and reject unknown keys.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ClassVar[str]
    summary: ClassVar[str] = ""

    @abstractmethod
    def build(self, num_latent_frames: int, num_steps: int) -> torch.Tensor:
        """Return the raw grid `[R + 1, num_latent_frames]` (R may exceed `num_steps`, e.g. for staircases)."""

    def grid(self, num_latent_frames: int, num_steps: int) -> torch.Tensor:
        """The validated grid `[R + 1, num_latent_frames]` (float64) for `num_steps` steps of the sequence."""
        if num_latent_frames < 1:
            raise PlanError(f"num_latent_frames={num_latent_frames} must be >= 1")
        if num_steps < 1:
            raise PlanError(f"num_steps={num_steps} must be >= 1")
        check_plan_size(num_steps, num_latent_frames)
        return check_grid(self.build(num_latent_frames, num_steps), num_latent_frames)
