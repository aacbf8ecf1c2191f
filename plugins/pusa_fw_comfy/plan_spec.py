"""`PusaPlanSpec`: what the Pusa Task node hands the other nodes (the `PUSA_PLAN` socket).

It carries the task object with the frame count, steps and shift it was compiled for, the compiled `Plan`
and the codec geometry, so the conditioning node encodes exactly the frames the plan holds and the
sampler can check its latents against the plan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from pusa_fw.components import lookup_class
from pusa_fw.errors import InputError
from pusa_fw.geometry import WAN21_GEOMETRY, LatentGeometry
from pusa_fw.plan import Plan
from pusa_fw.task import Hold, Task

from .errors import one_line

__all__ = ["DEFAULT_CHOICE", "PusaPlanSpec", "build_task", "compile_plan", "heatmap_image", "parse_json_object",
           "parse_list"]

DEFAULT_CHOICE = "(task default)"
"""The schedule/policy combo entry that keeps the task's own choice."""

POSITION_FIELDS = ("positions", "keyframes")
"""Task fields that take pixel-frame positions of keyframes (keyframes; rolling and loop)."""
STRENGTH_FIELDS = ("strengths", "keyframe_strengths", "strength")
"""Task fields the ``strengths`` widget fills (the first the task has)."""


@dataclass(frozen=True)
class PusaPlanSpec:
    """A compiled task (the value on a `PUSA_PLAN` socket).

    Attributes:
        task: the task object (its ``describe()`` rebuilds it).
        num_frames: pixel frames of the whole video.
        num_steps: denoising steps of the base schedule.
        shift: sigma shift.
        plan: the compiled, validated plan (`[S + 1, N]` sigmas).
        geometry: the codec's frame map the plan was compiled with.
    """

    task: Task
    num_frames: int
    num_steps: int
    shift: float
    plan: Plan
    geometry: LatentGeometry = WAN21_GEOMETRY

    @property
    def holds(self) -> list[Hold]:
        """The task's held frames (which input feeds which latent frame)."""
        return self.task.holds(self.num_frames, self.num_steps, self.geometry)

    @property
    def num_latent_frames(self) -> int:
        """N, latent frames on the timeline."""
        return self.plan.num_latent_frames


def parse_json_object(text: str, what: str) -> dict[str, Any]:
    """A JSON object from a text widget ('' means {}).

    Raises:
        InputError: not JSON, or not an object.
    """
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{what} is not valid JSON ({error.msg} at character {error.pos}): {text.strip()[:60]!r}") from None
    if not isinstance(value, dict):
        raise InputError(f"{what} must be a JSON object like {{\"window\": 81}}, got {type(value).__name__}")
    return value


def parse_list(text: str, what: str, kind: type) -> list[Any]:
    """Comma-separated numbers from a text widget ('' means no list)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        return [kind(item) for item in items]
    except ValueError:
        example = "0, 40, 80" if kind is int else "0.8, 0.5"
        raise InputError(f"{what} must be comma-separated {kind.__name__} values like {example!r}, got {text!r}") from None


def build_task(
    name: str,
    *,
    strengths: str = "",
    positions: str = "",
    params: str = "",
    schedule: str = DEFAULT_CHOICE,
    schedule_params: str = "",
    policy: str = DEFAULT_CHOICE,
    policy_params: str = "",
) -> Task:
    """A registered task from the Pusa Task node's widgets.

    The ``strengths`` and ``positions`` widgets fill the task's strength and keyframe-position fields;
    ``params`` (JSON) gives any other field. A field given twice (widget and JSON) is an error.

    Raises:
        InputError: unknown task, a widget the task does not take, bad JSON, or invalid parameters.
    """
    task_cls = lookup_class("tasks", name)
    fields = getattr(task_cls, "model_fields", {})
    values = parse_json_object(params, "params")
    widgets: dict[str, Any] = {}
    if strengths.strip():
        field = next((f for f in STRENGTH_FIELDS if f in fields), None)
        if field is None:
            raise InputError(f"task {name!r} takes no strengths; clear the strengths widget")
        numbers = parse_list(strengths, "strengths", float)
        if field == "strength":
            if len(numbers) != 1:
                raise InputError(f"task {name!r} takes one strength, got {len(numbers)}: {strengths!r}")
            widgets[field] = numbers[0]
        else:
            widgets[field] = numbers
    if positions.strip():
        field = next((f for f in POSITION_FIELDS if f in fields), None)
        if field is None:
            raise InputError(f"task {name!r} takes no keyframe positions; clear the positions widget")
        widgets[field] = parse_list(positions, "positions", int)
    for choice, choice_params, field in ((schedule, schedule_params, "schedule"), (policy, policy_params, "policy")):
        extra = parse_json_object(choice_params, f"{field}_params")
        if choice != DEFAULT_CHOICE:
            if field not in fields:
                raise InputError(f"task {name!r} has no {field}; choose {DEFAULT_CHOICE!r}")
            widgets[field] = choice
        if extra:
            widgets[f"{field}_params"] = extra
    twice = sorted(set(widgets) & set(values))
    if twice:
        raise InputError(f"{', '.join(twice)} given twice (by a widget and in params); keep one")
    try:
        return task_cls.model_validate({**values, **widgets})
    except ValidationError as error:
        raise InputError(f"task {name!r}: {one_line(error)}") from None


def compile_plan(task: Task, num_frames: int, num_steps: int, shift: float,
                 geometry: LatentGeometry = WAN21_GEOMETRY) -> PusaPlanSpec:
    """Compile `task` into a `PusaPlanSpec` (the plan is validated; the holds are checked too)."""
    plan = task.plan(num_frames=num_frames, num_steps=num_steps, shift=shift, geometry=geometry)
    spec = PusaPlanSpec(task=task, num_frames=num_frames, num_steps=num_steps, shift=shift, plan=plan,
                        geometry=geometry)
    spec.holds  # noqa: B018 - raises now (a keyframe past the end) rather than in the conditioning node
    return spec


def heatmap_image(plan: Plan) -> torch.Tensor:
    """The plan's frames-by-steps heatmap as a ComfyUI `IMAGE` `[1, H, W, 3]` float in [0, 1]."""
    import matplotlib.pyplot as plt

    from pusa_fw.plan_render import draw_heatmap

    figure = draw_heatmap(plan)
    try:
        figure.canvas.draw()
        pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    finally:
        plt.close(figure)
    return torch.from_numpy(pixels).to(torch.float32).div(255.0).unsqueeze(0)
