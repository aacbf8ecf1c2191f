"""Shared parameters of the built-in tasks: which base schedule, which policy, per-frame strengths.

A task's ``schedule`` and ``policy`` are each a registered name (with ``schedule_params`` /
``policy_params``), a ``{"name": ..., **params}`` table, or an object (``get_policy("renoise", level=0.05)``).
A policy given by name is built once per held frame from that frame's strength (`from_strength`), with
``policy_params`` winning over the strength; a policy object is used as given for every held frame.
"""

from __future__ import annotations

from typing import Any, Sequence

from pydantic import Field, SerializeAsAny, field_serializer, field_validator, model_validator

from pusa_fw.components import build, lookup_class, spec
from pusa_fw.errors import PlanError
from pusa_fw.geometry import WAN21_GEOMETRY, LatentGeometry
from pusa_fw.plan import Plan
from pusa_fw.policy import ConditioningPolicy
from pusa_fw.schedule import TimestepSchedule
from pusa_fw.task import Hold, Task, compose_plan


def make_schedule(schedule: str | TimestepSchedule, params: dict[str, Any], shift: float) -> TimestepSchedule:
    """The task's schedule: a name is built with `params` (`shift` fills its ``shift`` field if unset)."""
    if not isinstance(schedule, str):
        return build("schedules", schedule, params)
    cls = lookup_class("schedules", schedule)
    values = dict(params)
    if "shift" in getattr(cls, "model_fields", {}) and "shift" not in values:
        values["shift"] = shift
    return cls(**values)


def make_policy(
    policy: str | ConditioningPolicy, strength: float, params: dict[str, Any] | None = None
) -> ConditioningPolicy:
    """The policy of one held frame: a name is built from the frame's `strength` and `params`; an object as is."""
    if isinstance(policy, str):
        return lookup_class("conditioning_policies", policy).from_strength(strength, **dict(params or {}))
    return build("conditioning_policies", policy, params)


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


def _table_to_object(kind: str, value: Any) -> Any:
    return build(kind, value) if isinstance(value, dict) else value


class ScheduledTask(Task):
    """A task whose base grid comes from a schedule (default: the Wan/Pusa shifted grid)."""

    schedule: str | SerializeAsAny[TimestepSchedule] = Field(
        "shifted", description="schedule: a registered name (shifted, pyramid, trapezoid, ...), table or object"
    )
    schedule_params: dict[str, Any] = Field(default_factory=dict, description="parameters of a named schedule")
    policy: str | SerializeAsAny[ConditioningPolicy] = Field(
        "multiplier", description="conditioning policy of held frames: a registered name, table or object"
    )
    policy_params: dict[str, Any] = Field(
        default_factory=dict, description="parameters of a named policy (they win over per-frame strengths)"
    )

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_table(cls, value: Any) -> Any:
        return _table_to_object("schedules", value)

    @field_validator("policy", mode="before")
    @classmethod
    def _policy_table(cls, value: Any) -> Any:
        return _table_to_object("conditioning_policies", value)

    @model_validator(mode="after")
    def _params_need_a_name(self) -> ScheduledTask:
        for field in ("schedule", "policy"):
            if not isinstance(getattr(self, field), str) and getattr(self, f"{field}_params"):
                raise ValueError(f"{field}_params apply to a {field} given by name; set them on the object instead")
        strengths = sorted(name for name in self.model_fields_set if "strength" in name)
        if not isinstance(self.policy, str) and strengths:
            raise ValueError(
                f"{', '.join(strengths)} apply to a policy given by name; a policy object is used as given "
                "for every held frame (set its own fields instead)"
            )
        if isinstance(self.policy, str):
            lookup_class("conditioning_policies", self.policy)
        if isinstance(self.schedule, str):
            lookup_class("schedules", self.schedule)
        return self

    @field_serializer("schedule", "policy")
    def _component_spec(self, value: Any) -> Any:
        return value if isinstance(value, str) else spec(value)

    def base_schedule(self, shift: float) -> TimestepSchedule:
        """The base schedule (a named one gets `shift` unless its params set it)."""
        return make_schedule(self.schedule, self.schedule_params, shift)

    def held_policy(self, strength: float) -> ConditioningPolicy:
        """The policy of a held frame with per-frame `strength` (ignored for a policy object)."""
        return make_policy(self.policy, strength, self.policy_params)

    def plan(
        self, num_frames: int = 81, num_steps: int = 10, shift: float = 5.0, geometry: LatentGeometry = WAN21_GEOMETRY
    ) -> Plan:
        latents = geometry.num_latent_frames(num_frames)
        grid = self.base_schedule(shift).grid(latents, num_steps)
        return compose_plan(grid, self.holds(num_frames, num_steps, geometry), meta=self.describe())

    def holds(self, num_frames: int, num_steps: int = 10, geometry: LatentGeometry = WAN21_GEOMETRY) -> list[Hold]:
        return []
