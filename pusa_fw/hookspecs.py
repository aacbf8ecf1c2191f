"""Plugin hooks of pusa-fw (pluggy project and entry-point group ``pusa_fw``).

Every hook receives a ``register`` callback: ``register(obj, *, name=None, aliases=())``. ``name``
defaults to ``obj.name``. Hooks are called once, when plugins are loaded, and never inside the
denoising loop. First-party components (``pusa_fw_schedules``, ``pusa_fw_wan``) register exactly the
way third-party plugins do.
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("pusa_fw")
hookimpl = pluggy.HookimplMarker("pusa_fw")

Register = Callable[..., Any]


@hookspec
def register_schedules(register: Register) -> None:
    """Register `TimestepSchedule` subclasses (base sigma grids over frames and steps)."""


@hookspec
def register_conditioning_policies(register: Register) -> None:
    """Register `ConditioningPolicy` subclasses (how a held frame's sigma path is shaped)."""


@hookspec
def register_tasks(register: Register) -> None:
    """Register `Task` subclasses (a pydantic params model that compiles to a plan)."""


@hookspec
def register_samplers(register: Register) -> None:
    """Register sampler step rules (objects with ``name`` and the `SamplerRule` interface)."""


@hookspec
def register_caches(register: Register) -> None:
    """Register step caches (`pusa_fw.caches.StepCache` subclasses: pydantic parameters, ``name``; built by
    `pusa_fw.get_cache`)."""


@hookspec
def register_backbones(register: Register) -> None:
    """Register backbone factories (objects with ``name`` and ``load(**kwargs) -> Backbone``)."""


@hookspec
def register_commands(register: Register) -> None:
    """Register CLI sub-commands (objects with ``name``, ``help``, ``add_arguments(parser)``, ``run(args)``)."""


@hookspec
def register_model_formats(register: Register) -> None:
    """Register model formats (`pusa_fw.model_formats.ModelFormat`: ``name``, ``detect``, ``geometry``, ``load``)."""


@hookspec
def register_training_sources(register: Register) -> None:
    """Register training-source factories (``factory(**options) -> TrainingSource``; pass ``name=``)."""


@hookspec
def register_train_adapters(register: Register) -> None:
    """Register training adapters, one per backbone name (``pusa_fw_train.adapter.TrainAdapter``: build or
    load the model, default LoRA targets, sharding, codec and text encoder, context collation, LoRA key
    layout; pass ``name=``)."""
