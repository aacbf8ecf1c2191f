"""The public surface, in the style of ``llm.get_model``: every component by name, plugins loaded on first use.

Example:
    >>> import pusa_fw
    >>> task = pusa_fw.get_task("i2v", policy=pusa_fw.get_policy("renoise", level=0.05))
    >>> task.plan(num_frames=17, num_steps=4).num_latent_frames
    5
"""

from __future__ import annotations

import os
from typing import Any

from .caches.base import StepCache
from .components import build, canonical_kind, lookup_class
from .policy import ConditioningPolicy
from .samplers.base import SamplerRule
from .schedule import TimestepSchedule
from .task import Task


def get_task(name: str, **params: Any) -> Task:
    """A registered task with its parameters (``schedule``/``policy`` may be names, tables or objects).

    Example: ``get_task("keyframes", positions=[0, 40, 80], policy="late_release")``.

    Raises:
        UnknownComponentError: no task of that name; pydantic ValidationError: bad parameters.
    """
    return build("tasks", name, params)


def get_schedule(name: str, **params: Any) -> TimestepSchedule:
    """A registered schedule, e.g. ``get_schedule("pyramid", ar_step=2)`` or ``get_schedule("concat", ...)``."""
    return build("schedules", name, params)


def get_policy(name: str, **params: Any) -> ConditioningPolicy:
    """A registered conditioning policy, e.g. ``get_policy("renoise", level=0.05)``."""
    return build("conditioning_policies", name, params)


def get_sampler(name: str) -> SamplerRule:
    """A registered sampler rule (``"euler"``, ``"unipc"``); `pusa_fw.sample` also takes the name."""
    return lookup_class("samplers", name)


def get_cache(name: str, **params: Any) -> StepCache:
    """A registered step cache with its parameters, e.g. ``get_cache("framecache", threshold=0.2)``.

    Pass it to `pusa_fw.sample` (``cache=``) with a `pusa_fw.caches.WorkStats` (``work=``) to count the DiT
    work done. ``pusa-fw plugins`` lists the caches.

    Raises:
        UnknownComponentError: no cache of that name; pydantic ValidationError: bad parameters.
    """
    return build("caches", name, params)


def load_backbone(name: str, path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """Load a registered backbone from a checkpoint, e.g. ``load_backbone("wan2.1-t2v", "Wan2.1-T2V-1.3B")``.

    Args:
        name: registered backbone factory.
        path: checkpoint file or directory.
        **kwargs: passed to the factory's ``load`` (``dtype``, ``device``, ...).
    """
    return lookup_class("backbones", name).load(path, **kwargs)


def list_components(kind: str) -> dict[str, str]:
    """Registered names of one kind with their one-line summaries, sorted by name.

    Args:
        kind: ``"tasks"``, ``"schedules"``, ``"policies"`` (or ``"conditioning_policies"``), ``"samplers"``,
            ``"caches"``, ``"backbones"``, ``"commands"``; singular spellings work too.
    """
    from .plugins import get_registry

    registry = get_registry()
    return {
        entry.name: str(getattr(entry.component, "summary", "") or getattr(entry.component, "help", ""))
        for entry in registry.entries(canonical_kind(kind))
    }
