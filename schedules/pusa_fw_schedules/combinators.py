"""Schedules built from schedules: concatenation in time, resampling, overlay by min.

Parts are `ScheduleRef` fields: a registered name, a ``{"name": ..., **params}`` table (TOML, JSON on the
command line) or a schedule object, and they serialize back to the table form.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import AliasChoices, Field, model_validator

from pusa_fw.components import ScheduleRef
from pusa_fw.errors import PlanError
from pusa_fw.grid_ops import concat_frames, overlay_min, resample_grid
from pusa_fw.schedule import TimestepSchedule


class ConcatSchedule(TimestepSchedule):
    """`parts[k]` covers the next `frames[k]` latent frames; the last part takes whatever remains."""

    name = "concat"
    summary = "different schedules for consecutive frame ranges"

    parts: list[ScheduleRef] = Field(min_length=1)
    frames: list[int] = Field(default_factory=list, description="frames per part, all but the last")
    align: Literal["start", "end"] = "start"

    @model_validator(mode="after")
    def _check_counts(self) -> ConcatSchedule:
        if len(self.frames) != len(self.parts) - 1:
            raise ValueError(f"frames needs {len(self.parts) - 1} counts (one per part but the last)")
        if any(count < 1 for count in self.frames):
            raise ValueError("frames counts must be >= 1")
        return self

    def build(self, num_latent_frames: int, num_steps: int) -> torch.Tensor:
        rest = num_latent_frames - sum(self.frames)
        if rest < 1:
            raise PlanError(f"concat parts take {sum(self.frames)} frames, leaving none of {num_latent_frames} for the last")
        counts = [*self.frames, rest]
        return concat_frames([p.grid(n, num_steps) for p, n in zip(self.parts, counts)], align=self.align)


class ResampledSchedule(TimestepSchedule):
    """`inner` resampled to exactly `num_steps` rows (e.g. a staircase squeezed into a fixed budget)."""

    name = "resampled"
    summary = "another schedule resampled to a fixed number of steps"

    inner: ScheduleRef
    num_steps: int = Field(
        ge=1, validation_alias=AliasChoices("num_steps", "steps"), description="number of steps of the result"
    )

    def build(self, num_latent_frames: int, num_steps: int) -> torch.Tensor:
        return resample_grid(self.inner.grid(num_latent_frames, num_steps), self.num_steps)


class OverlaySchedule(TimestepSchedule):
    """Per cell the cleaner of two schedules (`second` resampled to the steps of `first`)."""

    name = "overlay"
    summary = "elementwise min of two schedules"

    first: ScheduleRef
    second: ScheduleRef

    def build(self, num_latent_frames: int, num_steps: int) -> torch.Tensor:
        return overlay_min(self.first.grid(num_latent_frames, num_steps), self.second.grid(num_latent_frames, num_steps))
