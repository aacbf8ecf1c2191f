"""Built-in base grids: shifted synchronous (Wan/Pusa), pyramid/staircase (diffusion forcing), trapezoid.

All three are staircases over the same shifted sequence: frame f starts its first step at row `offset[f]`
and then walks the sequence one step per row, so each frame takes exactly `num_steps` updates.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

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


class _ShiftedSequence(TimestepSchedule, ABC):
    """Shared parameters: every built-in grid walks the shifted Wan/Pusa sequence."""

    shift: float = Field(5.0, gt=0, allow_inf_nan=False, description="flow-matching time shift")
    sigma_max: float = Field(1.0, gt=0, le=1, description="unshifted start level (Wan's UniPC uses 0.999)")

    def sequence(self, num_steps: int) -> torch.Tensor:
        """`[num_steps + 1]` shifted sigmas from `shift(sigma_max)` to 0."""
        return shifted_sigmas(num_steps, self.shift, self.sigma_max)


class ShiftedGrid(_ShiftedSequence):
    """All frames share `sigma = shift * s / (1 + (shift - 1) * s)`, `s = linspace(sigma_max, 0, S + 1)`.

    ``sigma_max=1`` is Pusa's Euler grid; ``0.999`` is Wan's UniPC grid.
    """

    name = "shifted"
    summary = "synchronous grid, every frame on the shifted Wan/Pusa sequence"

    def build(self, num_latent_frames: int, num_steps: int) -> torch.Tensor:
        return self.sequence(num_steps).unsqueeze(1).repeat(1, num_latent_frames)


class _BlockStaircase(_ShiftedSequence, ABC):
    """Frames grouped in blocks of `causal_block_size`; each block starts `delay(block) * ar_step` rows late.

    A last block shorter than `causal_block_size` is kept (no frame dropped).
    """

    ar_step: int = Field(1, ge=0, description="rows of delay per block step")
    causal_block_size: int = Field(1, ge=1, description="latent frames per block")

    @abstractmethod
    def delay(self, blocks: torch.Tensor) -> torch.Tensor:
        """Delay units `[F]` (int64) of each frame's block `[F]`."""

    def build(self, num_latent_frames: int, num_steps: int) -> torch.Tensor:
        blocks = torch.arange(num_latent_frames) // self.causal_block_size
        return staircase(self.sequence(num_steps), self.delay(blocks) * self.ar_step)


class PyramidGrid(_BlockStaircase):
    """Diffusion-forcing staircase: block b starts `b * ar_step` rows late.

    SkyReels-V2's ``ar_step``/``causal_block_size``; ``ar_step=0`` is synchronous, ``ar_step >= steps`` is
    block-by-block autoregressive.
    """

    name = "pyramid"
    summary = "staircase: later frame blocks lag by ar_step rows (diffusion forcing)"

    def delay(self, blocks: torch.Tensor) -> torch.Tensor:
        return blocks


class TrapezoidGrid(_BlockStaircase):
    """Edges first, middle last: a block's delay grows with its distance from the nearer end."""

    name = "trapezoid"
    summary = "both ends denoise first, the middle last (bridges and transitions)"

    def delay(self, blocks: torch.Tensor) -> torch.Tensor:
        return torch.minimum(blocks, int(blocks[-1]) - blocks)
