"""Operators on base grids `[S + 1, F]`: concatenate in time, resample the steps, overlay by min.

Each takes valid grids (finite, in [0, 1], non-increasing per frame, last row 0) and returns a valid one.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from .errors import PlanError
from .schedule import check_grid


def resample_grid(grid: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Resample a grid to `num_steps` steps by linear interpolation along the step axis, per frame.

    The first and last rows are kept exactly; every column stays non-increasing.

    Args:
        grid: `[R + 1, F]`.
        num_steps: S, the new number of steps.

    Returns:
        `[S + 1, F]` float64.
    """
    grid = check_grid(grid)
    if num_steps < 1:
        raise PlanError(f"num_steps={num_steps} must be >= 1")
    rows = grid.shape[0] - 1
    position = torch.linspace(0, rows, num_steps + 1, dtype=torch.float64)
    lower = position.floor().long().clamp(max=rows - 1)
    frac = (position - lower).unsqueeze(1)
    wide = grid
    out = (1 - frac) * wide[lower] + frac * wide[lower + 1]
    out[0], out[-1] = wide[0], wide[-1]
    return out


def concat_frames(grids: Sequence[torch.Tensor], align: Literal["start", "end"] = "start") -> torch.Tensor:
    """Concatenate grids along the frame (time) axis.

    Grids with fewer steps are padded: with ``align="start"`` all parts start together and shorter ones
    finish early (trailing rows of 0); with ``align="end"`` all parts finish together and shorter ones wait
    at their first level (leading copies of row 0).

    Args:
        grids: `[R_k + 1, F_k]` grids.
        align: which ends of the parts line up.

    Returns:
        `[max R_k + 1, sum F_k]` float64.
    """
    if not grids:
        raise PlanError("concat_frames needs at least one grid")
    checked = [check_grid(g) for g in grids]
    rows = max(g.shape[0] for g in checked)
    padded = []
    for g in checked:
        missing = rows - g.shape[0]
        if align == "start":
            pad = torch.zeros(missing, g.shape[1], dtype=g.dtype)
            padded.append(torch.cat([g, pad]))
        elif align == "end":
            padded.append(torch.cat([g[:1].expand(missing, -1), g]))
        else:
            raise PlanError(f"align={align!r} must be 'start' or 'end'")
    return torch.cat(padded, dim=1)


def overlay_min(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Elementwise minimum of two grids over the same frames (the cleaner plan wins per cell).

    If the step counts differ, `second` is resampled to the steps of `first`.
    """
    first, second = check_grid(first), check_grid(second)
    if first.shape[1] != second.shape[1]:
        raise PlanError(f"overlay needs the same frames: {first.shape[1]} vs {second.shape[1]}")
    if first.shape[0] != second.shape[0]:
        second = resample_grid(second, first.shape[0] - 1)
    return torch.minimum(first, second)
