"""Tasks: a schedule + conditioning policies + held frames, compiled into a `Plan`.

A new task is one small class: a pydantic params model whose `plan` builds a base grid with a
`TimestepSchedule`, says which frames are held and how (`Hold`), and calls `compose_plan` (one window) or
`compose_timeline` (sliding windows over a longer timeline, `pusa_fw.timeline`). No pipeline code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict

from .errors import PlanError
from .geometry import WAN21_GEOMETRY, LatentGeometry
from .plan import Plan
from .policy import ConditioningPolicy
from .schedule import check_grid


@dataclass(frozen=True)
class Hold:
    """A held frame: latent `frame` on the timeline takes its content from an input and follows `policy`.

    Attributes:
        frame: latent index on the timeline.
        policy: how its sigma path is shaped.
        source: which input supplies it (e.g. ``"image"``, ``"keyframe:2"``, ``"video"``, ``"video_b"``).
        source_frame: the latent index inside that input's encoding (0 for a single image).
        clip_end: for a clip longer than what the task holds, which end is used: ``"head"`` (its first
            frames: v2v, the second clip of a transition) or ``"tail"`` (its last frames: the clip an
            extension or a transition continues from).
    """

    frame: int
    policy: ConditioningPolicy
    source: str = "image"
    source_frame: int = 0
    clip_end: Literal["head", "tail"] = "head"


def apply_holds(
    sigmas: torch.Tensor, input_sigmas: torch.Tensor, holds: Sequence[Hold]
) -> torch.Tensor:
    """Reshape the held columns of a grid in place by their policies; returns the `[N]` held mask.

    Args:
        sigmas: `[S + 1, N]` state grid, modified in place.
        input_sigmas: `[S, N]` input grid, modified in place.
        holds: held frames; each frame at most once.
    """
    num_frames = sigmas.shape[1]
    held = torch.zeros(num_frames, dtype=torch.bool)
    for hold in holds:
        if not 0 <= hold.frame < num_frames:
            raise PlanError(f"held frame {hold.frame} is outside the timeline of {num_frames} latent frames")
        if held[hold.frame]:
            raise PlanError(f"latent frame {hold.frame} is held twice; give each latent frame one condition")
        held[hold.frame] = True
        path = hold.policy.path(sigmas[:, hold.frame : hold.frame + 1].clone())
        sigmas[:, hold.frame] = path.sigmas[:, 0]
        input_sigmas[:, hold.frame] = path.input_sigmas[:, 0]
    return held


def compose_plan(
    grid: torch.Tensor, holds: Sequence[Hold] = (), *, meta: dict[str, Any] | None = None, prune: bool = True
) -> Plan:
    """Compile a one-window plan: every frame in every forward pass.

    Args:
        grid: `[S + 1, N]` base grid from a `TimestepSchedule`.
        holds: held frames and their policies.
        meta: description carried into the plan (task name, params).
        prune: drop steps in which nothing moves (e.g. the frozen head of a v2v plan).

    Returns:
        The validated `Plan`.
    """
    grid = check_grid(grid)
    sigmas = grid.clone()
    input_sigmas = grid[:-1].clone()
    held = apply_holds(sigmas, input_sigmas, holds)
    steps, frames = grid.shape[0] - 1, grid.shape[1]
    windows = torch.tensor([[0, frames]] * steps, dtype=torch.int64)
    plan = Plan(sigmas, input_sigmas, windows, held, meta=dict(meta or {}))
    return plan.pruned() if prune else plan


class Task(BaseModel, ABC):
    """A named task. Its fields are its parameters; `plan` compiles them into a `Plan`.

    Subclasses set ``name`` and ``summary`` and implement `plan`. They may also describe the media they
    need through `holds` (which inputs feed which latent frames) so a pipeline can encode them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ClassVar[str]
    summary: ClassVar[str] = ""

    @abstractmethod
    def holds(self, num_frames: int, num_steps: int = 10, geometry: LatentGeometry = WAN21_GEOMETRY) -> list[Hold]:
        """Held frames for a video of `num_frames` pixel frames, mapped to latents by `geometry`."""

    @abstractmethod
    def plan(
        self, num_frames: int = 81, num_steps: int = 10, shift: float = 5.0, geometry: LatentGeometry = WAN21_GEOMETRY
    ) -> Plan:
        """Compile the plan for `num_frames` pixel frames, `num_steps` steps and `shift`.

        Args:
            num_frames: pixel frames (a count the codec's `geometry` accepts: 4n + 1 for Wan2.1).
            num_steps: denoising steps of the base schedule.
            shift: sigma shift, used by schedules given by name that have a ``shift`` field.
            geometry: the codec's latent geometry (frame map); Wan2.1's by default.
        """

    def describe(self) -> dict[str, Any]:
        """Name and parameters, for plan metadata and sidecar files."""
        return {"task": self.name, "params": self.model_dump(mode="json")}
