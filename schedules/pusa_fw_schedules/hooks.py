"""Registers the built-in schedules, policies and tasks, exactly as a third-party plugin would.

The samplers (Euler, UniPC) belong to the core and are registered by its own plugin, `pusa_fw.samplers.hooks`.
"""

from __future__ import annotations

from pusa_fw.hookspecs import Register, hookimpl

from . import combinators, grids, policies, tasks_clips, tasks_frames, tasks_long


@hookimpl
def register_schedules(register: Register) -> None:
    for schedule in (
        grids.ShiftedGrid, grids.PyramidGrid, grids.TrapezoidGrid,
        combinators.ConcatSchedule, combinators.ResampledSchedule, combinators.OverlaySchedule,
    ):
        register(schedule)


@hookimpl
def register_conditioning_policies(register: Register) -> None:
    for policy in (
        policies.Clean, policies.NoiseMultiplier, policies.FixedRenoise,
        policies.LateRelease, policies.HoldThenRelease, policies.RampStrength,
    ):
        register(policy)


@hookimpl
def register_tasks(register: Register) -> None:
    for task in (
        tasks_frames.TextToVideo, tasks_frames.ImageToVideo, tasks_frames.StartEnd, tasks_frames.Keyframes,
        tasks_clips.Extension, tasks_clips.Transition, tasks_clips.VideoToVideo,
        tasks_long.Rolling, tasks_long.Loop,
    ):
        register(task)

