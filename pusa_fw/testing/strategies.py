"""Hypothesis strategies for plugin authors: base grids, held frames, plans, timelines.

    from hypothesis import given
    from pusa_fw.testing.strategies import plans, policies

    @given(plans(policy_strategy=policies([MyPolicy])))
    def test_my_policy_lands_on_x0(plan): ...

Components to draw from are parameters; policies are drawn with random valid parameters (`model_params`
reads each pydantic field's type and bounds).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from hypothesis import strategies as st
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ..flow import SIGMA_DTYPE
from ..geometry import WAN21_GEOMETRY, LatentGeometry
from ..plan import Plan
from ..policy import ConditioningPolicy
from ..schedule import TimestepSchedule
from ..task import Hold, Task, compose_plan
from ..timeline import compose_timeline, rolling_layout


@st.composite
def base_grids(draw: st.DrawFn, max_frames: int = 8, max_steps: int = 8) -> torch.Tensor:
    """Valid base grids `[S + 1, F]`: start at 1, non-increasing per frame (zero-length steps allowed), end at 0.

    Levels are 0 or at least 1e-4.
    """
    frames = draw(st.integers(1, max_frames))
    steps = draw(st.integers(1, max_steps))
    values = draw(
        st.lists(
            st.lists(st.floats(0.0, 1.0, allow_nan=False, width=32), min_size=steps - 1, max_size=steps - 1),
            min_size=frames,
            max_size=frames,
        )
    )
    columns = []
    for column in values:
        # Levels below 1e-4 become 0: a sigma of 1e-45 is no schedule anyone runs, and the exact-velocity
        # backbone divides by sigma.
        inner = sorted((v if v >= 1e-4 else 0.0 for v in column), reverse=True)
        columns.append(torch.tensor([1.0, *inner, 0.0], dtype=SIGMA_DTYPE))
    return torch.stack(columns, dim=1)


def _registered(kind: str) -> list[Any]:
    from ..plugins import get_registry

    registry = get_registry()
    return [registry.get(kind, name) for name in registry.names(kind)]


def _bound(info: FieldInfo, name: str) -> Any:
    for meta in info.metadata:
        value = getattr(meta, name, None)
        if value is not None:
            return value
    return None


def field_values(info: FieldInfo) -> st.SearchStrategy[Any] | None:
    """Valid random values of one pydantic field (bool, int, float within its ge/gt/le/lt); None otherwise.

    Unbounded ints are drawn from a small range above their lower bound (counts such as ``release_steps``).
    """
    annotation = info.annotation
    ge, gt, le, lt = (_bound(info, name) for name in ("ge", "gt", "le", "lt"))
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        low = ge if ge is not None else (gt + 1 if gt is not None else 0)
        high = le if le is not None else (lt - 1 if lt is not None else low + 8)
        return st.integers(low, max(low, min(high, low + 8)))
    if annotation is float:
        low = ge if ge is not None else (gt if gt is not None else 0.0)
        high = le if le is not None else (lt if lt is not None else low + 10.0)
        return st.floats(float(low), float(high), exclude_min=gt is not None, exclude_max=lt is not None,
                         allow_nan=False, allow_infinity=False)
    return None


def model_params(cls: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """Random valid keyword arguments of a pydantic component: every bool/int/float field drawn, others default."""
    drawn = {}
    for name, info in cls.model_fields.items():
        strategy = field_values(info)
        if strategy is not None:
            drawn[name] = strategy
    return st.fixed_dictionaries(drawn)


@st.composite
def policies(draw: st.DrawFn, components: Sequence[type[ConditioningPolicy]] | None = None) -> ConditioningPolicy:
    """A conditioning policy with random valid parameters (from its pydantic fields).

    Args:
        components: the policy classes to draw from (default: every registered one).
    """
    cls = draw(st.sampled_from(list(components) if components is not None else _registered("conditioning_policies")))
    return cls(**draw(model_params(cls)))


@st.composite
def held_frames(
    draw: st.DrawFn,
    num_latent_frames: int,
    max_held: int | None = None,
    policy_strategy: st.SearchStrategy[ConditioningPolicy] | None = None,
) -> list[Hold]:
    """A random set of distinct held frames on a timeline of `num_latent_frames`, each with a random policy."""
    limit = num_latent_frames if max_held is None else min(max_held, num_latent_frames)
    frames = draw(st.lists(st.integers(0, num_latent_frames - 1), unique=True, max_size=limit))
    policy_strategy = policies() if policy_strategy is None else policy_strategy
    return [Hold(frame, draw(policy_strategy), source="source", source_frame=frame) for frame in frames]


@st.composite
def one_window_plans(
    draw: st.DrawFn,
    max_frames: int = 8,
    max_steps: int = 8,
    policy_strategy: st.SearchStrategy[ConditioningPolicy] | None = None,
) -> Plan:
    """Plans over one window built from a random base grid and random held frames."""
    grid = draw(base_grids(max_frames, max_steps))
    holds = draw(held_frames(grid.shape[1], policy_strategy=policy_strategy))
    return compose_plan(grid, holds, prune=False)


@st.composite
def timeline_plans(
    draw: st.DrawFn,
    max_frames: int = 12,
    max_steps: int = 5,
    schedules: Sequence[TimestepSchedule] | None = None,
    policy_strategy: st.SearchStrategy[ConditioningPolicy] | None = None,
) -> Plan:
    """Rolling or ring plans over random layouts with random schedules and held frames.

    Args:
        schedules: schedule objects to draw from (default: the registered shifted, pyramid and trapezoid).
        policy_strategy: policies of held frames (default: `policies()`).
    """
    ring = draw(st.booleans())
    window = draw(st.integers(3 if ring else 1, 6))
    overlap = draw(st.integers(1 if ring else 0, (window - 1) // 2 if ring else window - 1))
    frames = draw(st.integers(window + 1 if ring else 1, max_frames))
    steps = draw(st.integers(1, max_steps))
    if schedules is None:
        from ..components import build

        schedules = [build("schedules", name) for name in ("shifted", "pyramid", "trapezoid")]
    schedule = draw(st.sampled_from(list(schedules)))
    holds = draw(held_frames(frames, max_held=3, policy_strategy=policy_strategy))
    history_noise = draw(st.sampled_from([0.0, 0.02, 0.3]))
    layouts = rolling_layout(frames, window, overlap, ring=ring)
    return compose_timeline(schedule, frames, steps, layouts, holds, ring=ring, history_noise=history_noise)


def plans(
    max_frames: int = 10,
    max_steps: int = 6,
    policy_strategy: st.SearchStrategy[ConditioningPolicy] | None = None,
) -> st.SearchStrategy[Plan]:
    """Any valid plan: one-window or windowed, with random held frames and policies."""
    return st.one_of(
        one_window_plans(max_frames, max_steps, policy_strategy),
        timeline_plans(max_frames, max_steps, policy_strategy=policy_strategy),
    )


@st.composite
def task_params(
    draw: st.DrawFn, cls: type[Task], num_frames: int, geometry: LatentGeometry = WAN21_GEOMETRY
) -> dict[str, Any]:
    """Parameters of a task that fit a `num_frames` video: keyframe positions on distinct latents."""
    params: dict[str, Any] = {}
    if "positions" in cls.model_fields:
        count = geometry.num_latent_frames(num_frames)
        latents = draw(st.lists(st.integers(0, count - 1), min_size=1, max_size=4, unique=True))
        params["positions"] = [draw(st.sampled_from(list(geometry.pixel_span(k)))) for k in latents]
    return params


def _frame_counts(name: str, geometry: LatentGeometry) -> st.SearchStrategy[int]:
    low = {"rolling": 22, "loop": 10}.get(name, 5)
    return st.integers(low, low + 12).map(geometry.num_frames)


@st.composite
def task_plans(
    draw: st.DrawFn,
    tasks: Sequence[str] | None = None,
    policy_names: Sequence[str] | None = None,
    geometry: LatentGeometry = WAN21_GEOMETRY,
) -> tuple[str, Plan]:
    """A plan of a task at a random size and shift: (task name, plan).

    Args:
        tasks: registered task names to draw from (default: all).
        policy_names: registered policy names to draw from, each built with random valid ``policy_params``
            (default: the task's own default policy).
        geometry: the codec's frame map.
    """
    from ..api import get_task
    from ..components import lookup_class
    from ..plugins import get_registry

    name = draw(st.sampled_from(list(tasks) if tasks is not None else get_registry().names("tasks")))
    cls = lookup_class("tasks", name)
    num_frames = draw(_frame_counts(name, geometry))
    params = draw(task_params(cls, num_frames, geometry))
    if policy_names is not None and "policy" in cls.model_fields:
        policy = draw(st.sampled_from(list(policy_names)))
        params["policy"] = policy
        params["policy_params"] = draw(model_params(lookup_class("conditioning_policies", policy)))
    task = get_task(name, **params)
    steps = draw(st.integers(1, 6))
    shift = draw(st.floats(1.0, 8.0))
    return name, task.plan(num_frames=num_frames, num_steps=steps, shift=shift, geometry=geometry)


def latents_for(plan: Plan, seed: int, batch: int = 1, channels: int = 2, size: tuple[int, int] = (2, 3)) -> tuple[
    torch.Tensor, torch.Tensor
]:
    """Clean latents and noise `[B, C, N, H, W]` for `plan`, from a seed."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, channels, plan.num_latent_frames, *size)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
