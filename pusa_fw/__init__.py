"""pusa-fw: composable per-frame (vectorized) timestep schedules for video diffusion.

The pieces: a `TimestepSchedule` gives a base sigma grid over frames and steps; a `ConditioningPolicy`
shapes the path of each held frame; a `Task` compiles both into a validated `Plan`; `sample` walks the plan
with a `Backbone` and a sampler rule. Plugins extend every piece through the ``pusa_fw`` entry points.

Start here::

    import pusa_fw
    task = pusa_fw.get_task("i2v", policy=pusa_fw.get_policy("renoise", level=0.05))
    plan = task.plan(num_frames=81, num_steps=10)
    pusa_fw.list_components("policies")
"""

from __future__ import annotations

from .api import get_cache, get_policy, get_sampler, get_schedule, get_task, list_components, load_backbone
from .backbone import Backbone
from .errors import PusaError
from .geometry import WAN21_GEOMETRY, LatentGeometry
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
    "LatentGeometry",
    "Plan",
    "PusaError",
    "StepInfo",
    "Task",
    "TimestepSchedule",
    "WAN21_GEOMETRY",
    "__version__",
    "compose_plan",
    "draw_noise",
    "get_cache",
    "get_policy",
    "get_sampler",
    "get_schedule",
    "get_task",
    "hookimpl",
    "list_components",
    "load_backbone",
    "sample",
]
