"""pusa-fw: composable per-frame (vectorized) timestep schedules for video diffusion.

The pieces: a `TimestepSchedule` gives a base sigma grid over frames and steps; a `ConditioningPolicy`
shapes the path of each held frame; a `Task` compiles both into a validated `Plan`; `sample` walks the plan
with a `Backbone` and a sampler rule. Plugins extend every piece through the ``pusa_fw`` entry points.
"""

from __future__ import annotations

from .backbone import Backbone
from .errors import PusaError
from .guidance import Guidance
from .hookspecs import hookimpl
from .plan import Plan
from .policy import ConditioningPolicy, FramePath
from .sampling import StepInfo, sample
from .schedule import TimestepSchedule
from .seeding import draw_noise
from .task import Hold, Task, compose_plan

__version__ = "0.1.0"
__all__ = [
    "Backbone",
    "ConditioningPolicy",
    "FramePath",
    "Guidance",
    "Hold",
    "Plan",
    "PusaError",
    "StepInfo",
    "Task",
    "TimestepSchedule",
    "__version__",
    "compose_plan",
    "draw_noise",
    "hookimpl",
    "sample",
]
