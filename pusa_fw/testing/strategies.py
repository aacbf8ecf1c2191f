"""Hypothesis strategies for plugin authors: base grids, held frames, plans, timelines.

    from hypothesis import given
    from pusa_fw.testing.strategies import plans

    @given(plans())
    def test_my_sampler_lands_on_x0(plan): ...
"""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import strategies as st

from ..plan import Plan
from ..policy import ConditioningPolicy
from ..task import Hold, compose_plan
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
        columns.append(torch.tensor([1.0, *inner, 0.0], dtype=torch.float32))
    return torch.stack(columns, dim=1)


def _registered(kind: str) -> list[Any]:
    from ..plugins import get_registry

    registry = get_registry()
    return [registry.get(kind, name) for name in registry.names(kind)]


@st.composite
def policies(draw: st.DrawFn) -> ConditioningPolicy:
    """Any registered conditioning policy with valid random parameters."""
    cls = draw(st.sampled_from(_registered("conditioning_policies")))
    strategy = st.builds(cls)
    return draw(strategy)


@st.composite
def held_frames(draw: st.DrawFn, num_frames: int, max_held: int | None = None) -> list[Hold]:
    """A random set of distinct held frames on a timeline of `num_frames`, each with a random policy."""
    limit = num_frames if max_held is None else min(max_held, num_frames)
    frames = draw(st.lists(st.integers(0, num_frames - 1), unique=True, max_size=limit))
    return [Hold(frame, draw(policies()), source="source", source_frame=frame) for frame in frames]


@st.composite
def one_window_plans(draw: st.DrawFn, max_frames: int = 8, max_steps: int = 8) -> Plan:
    """Plans over one window built from a random base grid and random held frames."""
    grid = draw(base_grids(max_frames, max_steps))
    holds = draw(held_frames(grid.shape[1]))
    return compose_plan(grid, holds, prune=False)


@st.composite
def timeline_plans(draw: st.DrawFn, max_frames: int = 12, max_steps: int = 5) -> Plan:
    """Rolling or ring plans over random layouts with registered schedules and random held frames."""
    from ..plugins import get_registry

    ring = draw(st.booleans())
    window = draw(st.integers(3 if ring else 1, 6))
    overlap = draw(st.integers(1 if ring else 0, (window - 1) // 2 if ring else window - 1))
    frames = draw(st.integers(window + 1 if ring else 1, max_frames))
    steps = draw(st.integers(1, max_steps))
    schedule_name = draw(st.sampled_from(["shifted", "pyramid", "trapezoid"]))
    schedule = get_registry().get("schedules", schedule_name)()
    holds = draw(held_frames(frames, max_held=3))
    history_noise = draw(st.sampled_from([0.0, 0.02, 0.3]))
    layouts = rolling_layout(frames, window, overlap, ring=ring)
    return compose_timeline(schedule, frames, steps, layouts, holds, ring=ring, history_noise=history_noise)


def plans(max_frames: int = 10, max_steps: int = 6) -> st.SearchStrategy[Plan]:
    """Any valid plan: one-window or windowed, with random held frames and policies."""
    return st.one_of(one_window_plans(max_frames, max_steps), timeline_plans(max_frames, max_steps))


@st.composite
def task_plans(draw: st.DrawFn) -> tuple[str, Plan]:
    """A plan of a registered task with its default parameters at a random size: (task name, plan)."""
    from ..plugins import get_registry

    registry = get_registry()
    name = draw(st.sampled_from(registry.names("tasks")))
    cls = registry.get("tasks", name)
    minimum = {"rolling": 85, "loop": 37}.get(name, 17)
    num_frames = 4 * draw(st.integers((minimum - 1) // 4, (minimum - 1) // 4 + 12)) + 1
    params: dict[str, Any] = {}
    if "positions" in cls.model_fields:  # keyframe-like tasks: distinct latents inside the video
        latents = draw(st.lists(st.integers(0, (num_frames - 1) // 4), min_size=1, max_size=4, unique=True))
        params["positions"] = [0 if k == 0 else 4 * k - draw(st.integers(0, 3)) for k in latents]
    task = cls(**params)
    steps = draw(st.integers(1, 6))
    shift = draw(st.floats(1.0, 8.0))
    return name, task.plan(num_frames=num_frames, steps=steps, shift=shift)


def latents_for(plan: Plan, seed: int, batch: int = 1, channels: int = 2, size: tuple[int, int] = (2, 3)) -> tuple[
    torch.Tensor, torch.Tensor
]:
    """Clean latents and noise `[B, C, N, H, W]` for `plan`, from a seed."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, channels, plan.num_frames, *size)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
