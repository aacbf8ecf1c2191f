"""Shared parameters of the built-in tasks: which base schedule, which policy, per-frame strengths."""

from __future__ import annotations

from typing import Any, Sequence

from pydantic import Field

from pusa_fw.errors import PlanError
from pusa_fw.frames import latent_frame_count
from pusa_fw.plan import Plan
from pusa_fw.policy import ConditioningPolicy
from pusa_fw.registry_lookup import lookup
from pusa_fw.schedule import TimestepSchedule
from pusa_fw.task import Hold, Task, compose_plan


def make_schedule(name: str, params: dict[str, Any], shift: float) -> TimestepSchedule:
    """Instantiate the registered schedule `name` with `params`; `shift` fills its ``shift`` field if unset."""
    cls = lookup("schedules", name)
    values = dict(params)
    if "shift" in getattr(cls, "model_fields", {}) and "shift" not in values:
        values["shift"] = shift
    return cls(**values)


def make_policy(name: str, strength: float) -> ConditioningPolicy:
    """Instantiate the registered policy `name` from a per-frame strength (1 = hard, 0 = free)."""
    return lookup("conditioning_policies", name).from_strength(strength)


def spread_strengths(strengths: float | Sequence[float], count: int, field: str) -> list[float]:
    """One strength per held frame: a single value is repeated; a list must have exactly `count` entries."""
    if isinstance(strengths, (int, float)):
        return [float(strengths)] * count
    values = [float(s) for s in strengths]
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise PlanError(f"{field} has {len(values)} values for {count} held frames; give one value or {count}")
    return values


Strength = Field(ge=0, le=1)


class ScheduledTask(Task):
    """A task whose base grid comes from a registered schedule (default: Wan/Pusa shifted grid)."""

    schedule: str = Field("shifted", description="registered schedule name (shifted, pyramid, trapezoid, ...)")
    schedule_params: dict[str, Any] = Field(default_factory=dict, description="parameters of the schedule")
    policy: str = Field("multiplier", description="conditioning policy of held frames")

    def base_schedule(self, shift: float) -> TimestepSchedule:
        return make_schedule(self.schedule, self.schedule_params, shift)

    def plan(self, num_frames: int = 81, steps: int = 10, shift: float = 5.0) -> Plan:
        latents = latent_frame_count(num_frames)
        grid = self.base_schedule(shift).grid(latents, steps)
        return compose_plan(grid, self.holds(num_frames, steps), meta=self.describe())

    def holds(self, num_frames: int, steps: int = 10) -> list[Hold]:
        return []
