"""Components given by name, by ``{"name": ..., **params}`` or as objects, resolved through the registry.

A task field, a combinator part or a TOML table can name a schedule or policy (``"pyramid"``), spell it
with parameters (``{"name": "renoise", "level": 0.05}``) or hold a built object
(``get_policy("renoise", level=0.05)``). `ScheduleRef` and `PolicyRef` are the pydantic field types that
accept all three and serialize back to the dict form, so a task's `describe()` rebuilds the same task.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer
from pydantic import ValidationError as _ValidationError

from .errors import InputError, PusaError
from .policy import ConditioningPolicy
from .registry import KINDS
from .schedule import TimestepSchedule

KIND_ALIASES: dict[str, str] = {
    "schedule": "schedules",
    "policy": "conditioning_policies",
    "policies": "conditioning_policies",
    "conditioning_policy": "conditioning_policies",
    "task": "tasks",
    "sampler": "samplers",
    "backbone": "backbones",
    "command": "commands",
}
"""Short and singular spellings of the component kinds (``"policy"`` -> ``"conditioning_policies"``)."""


def canonical_kind(kind: str) -> str:
    """The registry kind for ``kind`` or one of `KIND_ALIASES` (raises `InputError` naming the kinds)."""
    resolved = KIND_ALIASES.get(kind, kind)
    if resolved not in KINDS:
        raise InputError(f"unknown component kind {kind!r}; use one of: {', '.join(KINDS)} (or policies)")
    return resolved


def lookup_class(kind: str, name: str) -> Any:
    """The component registered as `name` under `kind` (plugins load on first use)."""
    from .plugins import get_registry

    return get_registry().get(canonical_kind(kind), name)


def build(kind: str, value: Any, params: dict[str, Any] | None = None) -> Any:
    """Build a component from a name (+ `params`), a ``{"name": ..., **params}`` dict, or return an object.

    Raises:
        UnknownComponentError: the name is not registered.
        InputError: `params` given with an object, or a dict without ``name``.
    """
    if isinstance(value, str):
        return lookup_class(kind, value)(**dict(params or {}))
    if isinstance(value, dict):
        if "name" not in value:
            raise InputError(f"a {kind} given as a table needs a 'name' key, got keys {sorted(value)}")
        values = dict(value)
        name = values.pop("name")
        return build(kind, name, {**values, **dict(params or {})})
    if params:
        raise InputError(
            f"parameters {sorted(params)} apply to a {kind} given by name; set them on the object instead"
        )
    return value


def spec(component: Any) -> dict[str, Any]:
    """The ``{"name": ..., **params}`` form of a component object (JSON-able; `build` rebuilds it)."""
    return {"name": component.name, **component.model_dump(mode="json")}


def _resolver(kind: str, base: type) -> Any:
    def resolve(value: Any) -> Any:
        if isinstance(value, (str, dict)):
            try:
                return build(kind, value)
            except _ValidationError:
                raise
            except PusaError as error:
                raise ValueError(str(error)) from None
        if not isinstance(value, base):
            raise ValueError(f"expected a {kind} name, a {{'name': ...}} table or a {base.__name__}, got {value!r}")
        return value

    return resolve


ScheduleRef = Annotated[
    TimestepSchedule,
    BeforeValidator(_resolver("schedules", TimestepSchedule)),
    PlainSerializer(spec, return_type=dict),
]
"""A schedule field: a registered name, a ``{"name": ..., **params}`` table, or a `TimestepSchedule`."""

PolicyRef = Annotated[
    ConditioningPolicy,
    BeforeValidator(_resolver("conditioning_policies", ConditioningPolicy)),
    PlainSerializer(spec, return_type=dict),
]
"""A policy field: a registered name, a ``{"name": ..., **params}`` table, or a `ConditioningPolicy`."""
