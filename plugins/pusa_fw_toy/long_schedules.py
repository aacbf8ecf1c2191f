"""The long-video schedules eval-toy ``--long`` compares, and how each is asked for on the command line.

Every schedule is a `rolling` (or `loop`) task's parameters plus a history-guidance scale, the same
things ``pusa-fw generate --task rolling`` takes; `LongSchedule.generate_args` spells them as its flags,
so the manifest's ``long_video.generate_args`` and the README's command are what eval measured.

| schedule         | windows (pixel frames) | history shown to the model               | source               |
|------------------|------------------------|------------------------------------------|----------------------|
| w9o3-clean       | 9, 3 of history        | clean (sigma 0)                          | rolling default      |
| w9o5-clean       | 9, 5 of history        | clean                                    | more context         |
| w9o3-noise0.02   | 9, 3                   | at sigma 0.02, fresh noise every step    | SkyReels-V2 DF       |
| w9o3-mult0.2     | 9, 3                   | at 0.2 x the window's current level      | Pusa's multiplier    |
| w9o3-pyramid     | 9, 3                   | clean; new frames on a staircase (ar 2)  | diffusion forcing    |
| w9o3-hg1.5       | 9, 3                   | clean, history guidance 1.5              | DFoT                 |

The first image (rolling, loop) and the 3-frame prefix (extension: rolling with keyframes 0, 1, 2) are
held clean, the VTA's own setting (``VTA + sigma 0`` in eval-toy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HELD", "LONG_SCHEDULES", "LongSchedule", "task_for"]

HELD: dict[str, Any] = {"policy": "clean", "image_strength": 1.0}
"""How the given image or prefix is held in every schedule."""


@dataclass(frozen=True)
class LongSchedule:
    """One long-video schedule.

    Attributes:
        params: rolling-task parameters (window, overlap, history_noise, history_multiplier, schedule,
            schedule_params), in pixel frames.
        history_guidance: history guidance scale (1 = off).
    """

    params: dict[str, Any] = field(default_factory=dict)
    history_guidance: float = 1.0

    def generate_args(self) -> list[str]:
        """The extra ``pusa-fw generate --task rolling`` arguments of this schedule (and its held policy)."""
        args: list[str] = []
        for name, value in {**self.params, **HELD}.items():
            flag = "--" + name.replace("_", "-")
            args += [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
        if self.history_guidance != 1.0:
            args += ["--history-guidance", str(self.history_guidance)]
        return args


LONG_SCHEDULES: dict[str, LongSchedule] = {
    "w9o3-clean": LongSchedule({"window": 9, "overlap": 3}),
    "w9o5-clean": LongSchedule({"window": 9, "overlap": 5}),
    "w9o3-noise0.02": LongSchedule({"window": 9, "overlap": 3, "history_noise": 0.02}),
    "w9o3-mult0.2": LongSchedule({"window": 9, "overlap": 3, "history_multiplier": 0.2}),
    "w9o3-pyramid": LongSchedule({"window": 9, "overlap": 3, "schedule": "pyramid",
                                   "schedule_params": {"ar_step": 2}}),
    "w9o3-hg1.5": LongSchedule({"window": 9, "overlap": 3}, history_guidance=1.5),
}


def task_for(kind: str, schedule: LongSchedule) -> tuple[str, dict[str, Any]]:
    """``(registered task, parameters)`` of a long task kind under `schedule`.

    Args:
        kind: ``"rolling"`` (from one image), ``"extension"`` (from a 3-frame prefix, held as keyframes
            0, 1, 2 of a rolling timeline) or ``"loop"`` (from one image, on a ring).
        schedule: the schedule.
    """
    params = {**schedule.params, "policy": HELD["policy"]}
    if kind == "rolling":
        return "rolling", {**params, "image": True, "image_strength": HELD["image_strength"]}
    if kind == "loop":
        return "loop", {**params, "image": True, "image_strength": HELD["image_strength"]}
    if kind == "extension":
        return "rolling", {**params, "keyframes": [0, 1, 2], "keyframe_strengths": [HELD["image_strength"]]}
    raise ValueError(f"no long task {kind!r}; choose rolling, extension or loop")
