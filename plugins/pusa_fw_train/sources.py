"""Choosing a `TrainingSource` by name: registered factories, a cache directory, or ``module:factory``.

A factory is called as ``factory(**options)`` (``options`` from the config's ``data.options``) and
returns a `TrainingSource`. Built in: ``"random"`` (`InMemorySource.random`, for tests and smoke runs).
Plugins add factories through the ``register_training_sources`` hook (the registry kind
``training_sources``); code registers them with `register_source`. A ``data.source`` that is an existing
directory is opened by the factory registered as ``"cache"`` (the Wan plugin's latent cache of
``pusa-fw prepare``) with ``directory`` set to it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pusa_fw.errors import InputError

from pusa_fw.training_data import InMemorySource, TrainingSource

__all__ = ["open_data", "open_source", "register_source", "registered_sources"]

SourceFactory = Callable[..., TrainingSource]

_FACTORIES: dict[str, SourceFactory] = {}
_DIRECTORY_SOURCE = "cache"


def _random_source(
    count: int = 4,
    latent_shape: tuple[int, int, int, int] = (16, 3, 4, 4),
    context_shape: tuple[int, int] = (8, 64),
    seed: int = 0,
) -> InMemorySource:
    return InMemorySource.random(count, tuple(latent_shape), tuple(context_shape), seed=seed)


_FACTORIES["random"] = _random_source


def register_source(name: str, factory: SourceFactory) -> None:
    """Make `factory` available as ``data.source = name``; a second registration of a name is an error."""
    if name in _FACTORIES and _FACTORIES[name] is not factory:
        raise InputError(f"training source {name!r} is already registered; choose another name")
    _FACTORIES[name] = factory


def registered_sources() -> list[str]:
    """Names usable as ``data.source``."""
    from pusa_fw.plugins import get_registry

    return sorted(set(_FACTORIES) | set(get_registry().names("training_sources")))


def _import_factory(spec: str) -> SourceFactory:
    module_name, _, attribute = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise InputError(f"cannot import training source factory {spec!r}: {error}") from None


def open_source(source: str, options: dict[str, Any]) -> TrainingSource:
    """The `TrainingSource` named by a config's ``data.source`` and ``data.options``.

    Raises:
        InputError: an unknown name, a factory that cannot be imported, or options it does not take.
    """
    from pusa_fw.plugins import get_registry

    plugged = get_registry()
    if source in _FACTORIES:
        factory = _FACTORIES[source]
    elif ("training_sources", source) in plugged:
        factory = plugged.get("training_sources", source)
    elif ":" in source and not Path(source).exists():
        factory = _import_factory(source)
    elif Path(source).expanduser().is_dir() and ("training_sources", _DIRECTORY_SOURCE) in plugged:
        factory = plugged.get("training_sources", _DIRECTORY_SOURCE)
        options = {"directory": str(Path(source).expanduser()), **options}
    else:
        raise InputError(
            f"unknown training source {source!r}; use one of {registered_sources()}, a cache directory, "
            "or 'module:factory'"
        )
    try:
        opened = factory(**options)
    except TypeError as error:
        raise InputError(f"training source {source!r} rejected data.options {options}: {error}") from None
    if not isinstance(opened, TrainingSource):
        raise InputError(
            f"training source {source!r} returned a {type(opened).__name__}, not a TrainingSource"
        )
    return opened


def open_data(section: Any) -> TrainingSource:
    """The source of a config's ``data`` section: its ``source``, or a `MixedSource` of its ``datasets``."""
    if not section.datasets:
        return open_source(section.source, section.options)
    from .mixing import MixedSource

    opened = [open_source(entry.source, entry.options) for entry in section.datasets]
    return MixedSource(opened, [entry.repeats for entry in section.datasets])
