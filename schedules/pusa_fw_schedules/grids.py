"""Built-in base grids: shifted synchronous (Wan/Pusa), pyramid/staircase (diffusion forcing), trapezoid.

All three are staircases over the same shifted sequence: frame f starts its first step at row `offset[f]`
and then walks the sequence one step per row, so each frame takes exactly `num_steps` updates.
"""

from __future__ import annotations

import torch
from pydantic import Field

from pusa_fw.schedule import TimestepSchedule, shifted_sigmas


def staircase(sequence: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Lay a sigma sequence out as a staircase.

    Args:
        sequence: `[N + 1]` sigmas (first the start level, last 0).
        offsets: `[F]` int64 row at which each frame takes its first step.

    Returns:
        `[N + max(offsets) + 1, F]` with ``grid[r, f] = sequence[clamp(r - offsets[f], 0, N)]``.
    """
    steps = sequence.shape[0] - 1
    rows = steps + int(offsets.max())
    index = torch.arange(rows + 1).unsqueeze(1) - offsets.unsqueeze(0)
    return sequence[index.clamp(0, steps)]


class ShiftedGrid(TimestepSchedule):
    """All frames share `sigma = shift * s / (1 + (shift - 1) * s)`, `s = linspace(sigma_max, 0, S + 1)`.

    ``sigma_max=1`` is Pusa's Euler grid; ``0.999`` is Wan's UniPC grid.
    """

    name = "shifted"
    summary = "synchronous grid, every frame on the shifted Wan/Pusa sequence"

    shift: float = Field(5.0, gt=0, description="flow-matching time shift")
    sigma_max: float = Field(1.0, gt=0, le=1, description="unshifted start level (Wan's UniPC uses 0.999)")

    def build(self, num_frames: int, num_steps: int) -> torch.Tensor:
        return shifted_sigmas(num_steps, self.shift, self.sigma_max).unsqueeze(1).repeat(1, num_frames)


class PyramidGrid(TimestepSchedule):
    """Diffusion-forcing staircase: block b of `causal_block_size` frames starts `b * ar_step` rows late.

    SkyReels-V2's ``ar_step``/``causal_block_size``; ``ar_step=0`` is synchronous, ``ar_step >= steps`` is
    block-by-block autoregressive. A last block shorter than `causal_block_size` is kept (no frame dropped).
    """

    name = "pyramid"
    summary = "staircase: later frame blocks lag by ar_step rows (diffusion forcing)"

    shift: float = Field(5.0, gt=0, description="flow-matching time shift")
    sigma_max: float = Field(1.0, gt=0, le=1, description="unshifted start level")
    ar_step: int = Field(1, ge=0, description="rows each block lags the previous one")
    causal_block_size: int = Field(1, ge=1, description="latent frames per block")

    def build(self, num_frames: int, num_steps: int) -> torch.Tensor:
        blocks = torch.arange(num_frames) // self.causal_block_size
        return staircase(shifted_sigmas(num_steps, self.shift, self.sigma_max), blocks * self.ar_step)


class TrapezoidGrid(TimestepSchedule):
    """Edges first, middle last: a block's delay grows with its distance from the nearer end."""

    name = "trapezoid"
    summary = "both ends denoise first, the middle last (bridges and transitions)"

    shift: float = Field(5.0, gt=0, description="flow-matching time shift")
    sigma_max: float = Field(1.0, gt=0, le=1, description="unshifted start level")
    ar_step: int = Field(1, ge=0, description="rows of delay per block towards the middle")
    causal_block_size: int = Field(1, ge=1, description="latent frames per block")

    def build(self, num_frames: int, num_steps: int) -> torch.Tensor:
        blocks = torch.arange(num_frames) // self.causal_block_size
        last = int(blocks[-1])
        distance = torch.minimum(blocks, last - blocks)
        return staircase(shifted_sigmas(num_steps, self.shift, self.sigma_max), distance * self.ar_step)
