"""The plugin host: a pluggy manager fed from the ``pusa_fw`` entry-point group, and its registry.

Loading order (`make_plugin_manager`):

1. every name in ``PUSA_FW_DISABLE_PLUGINS=a,b`` is blocked (by entry-point name);
2. entry points of group ``pusa_fw`` are loaded through pluggy's ``load_setuptools_entrypoints``,
   all of them, or only those named in ``PUSA_FW_LOAD_PLUGINS=a,b`` (``PUSA_FW_LOAD_PLUGINS=`` loads
   none). First-party plugins (``schedules``, ``wan``) arrive this way too: the ``pusa-fw``
   distribution declares them;
3. plugins passed in by the caller (tests, scripts) are registered;
4. ``check_pending`` turns a misspelled hook name into a `PluginError`.

Then `build_registry` calls every ``register_<kind>`` hook once, plugin by plugin, handing each a
``register`` callback that records the plugin as the provenance of what it registers. Nothing here
runs inside the denoising loop.

The process-wide default (`load_plugins`, `get_registry`) is built lazily, once; `reset_plugins`
forgets it and `install_plugin_manager` replaces it (both for tests).
"""

from __future__ import annotations

import difflib
import importlib.metadata
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError, PusaError
from .registry import KINDS, Registry

ENTRYPOINT_GROUP = "pusa_fw"
"""Entry-point group (and pluggy project name) that plugins declare."""
DISABLE_ENV = "PUSA_FW_DISABLE_PLUGINS"
"""Comma-separated entry-point names never to load."""
LOAD_ENV = "PUSA_FW_LOAD_PLUGINS"
"""If set: comma-separated entry-point names to load instead of all (empty: none)."""


@dataclass(frozen=True)
class PluginInfo:
    """What ``pusa-fw plugins`` shows for one plugin.

    Attributes:
        name: The plugin's name (its entry-point name for installed plugins).
        module: Import name of the plugin object (usually its hooks module).
        distribution: The distribution that declared the entry point, or None.
        version: That distribution's version, or None.
        registered: Kind -> sorted component names this plugin registered.
    """

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    registered: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "registered": {kind: list(names) for kind, names in self.registered.items()},
        }


def _names_from_env(environ: Mapping[str, str], variable: str) -> list[str] | None:
    """Comma-separated names from an environment variable; None when it is unset."""
    raw = environ.get(variable)
    if raw is None:
        return None
    return [name.strip() for name in raw.split(",") if name.strip()]


def discover_entry_points(group: str = ENTRYPOINT_GROUP) -> list[tuple[importlib.metadata.EntryPoint, str]]:
    """Installed entry points of a group, each with its distribution's name, sorted by entry-point name.

    A distribution found twice on the path counts once (the first, as for imports).

    Raises:
        PluginError: Two different distributions declare the same entry-point name.
    """
    found: dict[str, tuple[importlib.metadata.EntryPoint, str]] = {}
    for dist in importlib.metadata.distributions():
        dist_name = dist.metadata["Name"] or "<unnamed distribution>"
        for entry_point in dist.entry_points:
            if entry_point.group != group:
                continue
            previous = found.get(entry_point.name)
            if previous is None:
                found[entry_point.name] = (entry_point, dist_name)
            elif _canonical(previous[1]) != _canonical(dist_name):
                raise PluginError(
                    f"entry point {entry_point.name!r} in group {group!r} is declared by two distributions, "
                    f"{previous[1]!r} and {dist_name!r}; uninstall one of them"
                )
    return [found[name] for name in sorted(found)]


def _canonical(dist_name: str) -> str:
    return dist_name.lower().replace("_", "-").replace(".", "-")


def _load_entry_points(manager: pluggy.PluginManager, environ: Mapping[str, str]) -> None:
    """Load the entry points selected by the environment switches into ``manager``."""
    available = discover_entry_points()
    only = _names_from_env(environ, LOAD_ENV)
    if only is not None:
        missing = sorted(set(only) - {entry_point.name for entry_point, _ in available})
        if missing:
            installed = ", ".join(entry_point.name for entry_point, _ in available) or "(none)"
            raise PluginError(
                f"{LOAD_ENV} names plugin(s) {', '.join(map(repr, missing))} that no installed "
                f"distribution provides (installed plugins: {installed}); fix the spelling or install them"
            )
    for entry_point, dist_name in available:
        if only is not None and entry_point.name not in only:
            continue
        if manager.is_blocked(entry_point.name) or manager.has_plugin(entry_point.name):
            continue
        try:
            manager.load_setuptools_entrypoints(ENTRYPOINT_GROUP, name=entry_point.name)
        except Exception as exc:
            raise PluginError(
                f"plugin {entry_point.name!r} ({entry_point.value}) from distribution {dist_name!r} could "
                f"not be loaded: {type(exc).__name__}: {exc}; fix or uninstall {dist_name!r}, or skip it "
                f"with {DISABLE_ENV}={entry_point.name}"
            ) from exc


def register_plugin(manager: pluggy.PluginManager, plugin: object, name: str | None = None) -> str | None:
    """Register a plugin object (module, class or instance with hookimpls) with a manager.

    Args:
        manager: A manager from `make_plugin_manager`.
        plugin: The object whose ``@hookimpl`` functions implement hooks.
        name: Plugin name (shown as provenance); pluggy's default name when None.

    Returns:
        The name it was registered under, or None when that name is blocked.

    Raises:
        PluginError: A hookimpl does not fit its hookspec, or the name or object is already registered.
    """
    try:
        registered_name = manager.register(plugin, name=name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        raise PluginError(f"plugin {name or plugin!r} could not be registered: {exc}") from exc
    return registered_name


def check_pending(manager: pluggy.PluginManager) -> None:
    """Fail on hookimpls of hooks that have no spec (typically a misspelled hook name).

    Raises:
        PluginError: Naming the plugin, the unknown hook and the closest real hook.
    """
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        plugin_name = manager.get_name(exc.plugin) or repr(exc.plugin)
        known = [hook for hook in dir(hookspecs) if hook.startswith("register_")]
        unknown = [
            hook
            for hook, caller in vars(manager.hook).items()
            if not hook.startswith("_") and not caller.has_spec() and any(
                impl.plugin is exc.plugin for impl in caller.get_hookimpls()
            )
        ]
        hints = [
            f"{hook!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(hook, known, n=1))
            else repr(hook)
            for hook in unknown
        ]
        raise PluginError(
            f"plugin {plugin_name!r} implements unknown hook(s) {', '.join(hints)}; the hooks are: "
            f"{', '.join(known)} (or mark the hookimpl optionalhook=True)"
        ) from exc


def core_plugin() -> Any:
    """The core's own plugin (``core``): the samplers' and the step caches' hooks as one plugin object."""
    from .caches import hooks as cache_hooks
    from .samplers import hooks as sampler_hooks

    class CorePlugin:
        __name__ = "pusa_fw.core"
        register_samplers = staticmethod(sampler_hooks.register_samplers)
        register_caches = staticmethod(cache_hooks.register_caches)

    return CorePlugin()


def make_plugin_manager(
    *,
    entrypoints: bool = True,
    plugins: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
) -> pluggy.PluginManager:
    """Build a plugin manager with the pusa-fw hookspecs and load plugins into it.

    Args:
        entrypoints: Load the ``pusa_fw`` entry points (subject to ``PUSA_FW_LOAD_PLUGINS``). The core's
            own plugin (``core``: the samplers of `pusa_fw.samplers.hooks` and the step caches of
            `pusa_fw.caches.hooks`) is registered in every case.
        plugins: Further plugins to register, name -> plugin object (after the entry points).
        environ: Where the switches are read; ``os.environ`` when None.

    Returns:
        The loaded, checked manager.

    Raises:
        PluginError: A plugin failed to import or register, or implements an unknown hook.
    """
    environ = os.environ if environ is None else environ
    manager = pluggy.PluginManager(ENTRYPOINT_GROUP)
    manager.add_hookspecs(hookspecs)
    from .samplers import hooks as core_hooks

    manager.register(core_plugin(), name=core_hooks.CORE_PLUGIN_NAME)
    for blocked in _names_from_env(environ, DISABLE_ENV) or []:
        if blocked == core_hooks.CORE_PLUGIN_NAME:
            raise PluginError(
                f"{DISABLE_ENV} names {blocked!r}, the core's own plugin (its samplers and caches), which "
                "cannot be disabled; remove it from the list"
            )
        manager.set_blocked(blocked)
    if entrypoints:
        _load_entry_points(manager, environ)
    for name, plugin in (plugins or {}).items():
        register_plugin(manager, plugin, name=name)
    check_pending(manager)
    return manager


def build_registry(manager: pluggy.PluginManager) -> Registry:
    """Call each ``register_<kind>`` hook once per plugin and collect what they register.

    Args:
        manager: A manager from `make_plugin_manager`.

    Returns:
        A new `Registry`; each entry's ``plugin`` is the name of the plugin that registered it.

    Raises:
        DuplicateComponentError: Two plugins registered the same name (both are named).
        PluginError: A hook raised; the message names the plugin and the switch to disable it.
    """
    registry = Registry()
    named_plugins = [(name, plugin) for name, plugin in manager.list_name_plugin() if plugin is not None]
    for kind in KINDS:
        hook_name = f"register_{kind}"
        # pluggy calls the last registered implementation first; keep that order.
        for impl in reversed(getattr(manager.hook, hook_name).get_hookimpls()):
            others = [plugin for name, plugin in named_plugins if name != impl.plugin_name]
            caller = manager.subset_hook_caller(hook_name, remove_plugins=others)
            try:
                caller(register=registry.registrar(kind, impl.plugin_name))
            except PusaError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name!r} failed in {hook_name}: {type(exc).__name__}: {exc}; "
                    f"skip it with {DISABLE_ENV}={impl.plugin_name}"
                ) from exc
    return registry


def describe_plugins(manager: pluggy.PluginManager, registry: Registry) -> list[PluginInfo]:
    """One `PluginInfo` per registered plugin, sorted by name (blocked plugins are left out)."""
    distributions = {id(plugin): dist for plugin, dist in manager.list_plugin_distinfo()}
    infos = []
    for name, plugin in manager.list_name_plugin():
        if plugin is None:
            continue
        dist = distributions.get(id(plugin))
        infos.append(
            PluginInfo(
                name=name,
                module=getattr(plugin, "__name__", type(plugin).__qualname__),
                distribution=None if dist is None else dist.project_name,
                version=None if dist is None else dist.version,
                registered=registry.by_plugin(name),
            )
        )
    return sorted(infos, key=lambda info: info.name)


def blocked_plugins(manager: pluggy.PluginManager) -> list[str]:
    """Sorted names blocked in a manager (from ``PUSA_FW_DISABLE_PLUGINS``)."""
    return sorted(name for name, plugin in manager.list_name_plugin() if plugin is None)


_default_manager: pluggy.PluginManager | None = None
_default_registry: Registry | None = None


def load_plugins() -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first use (entry points and env switches)."""
    global _default_manager
    if _default_manager is None:
        _default_manager = make_plugin_manager()
    return _default_manager


def get_registry() -> Registry:
    """The process-wide registry: every loaded plugin's hooks called once, on first use."""
    global _default_registry
    if _default_registry is None:
        _default_registry = build_registry(load_plugins())
    return _default_registry


def install_plugin_manager(manager: pluggy.PluginManager) -> None:
    """Make ``manager`` the process-wide one and forget the cached registry (for tests and embedding)."""
    global _default_manager, _default_registry
    _default_manager = manager
    _default_registry = None


def reset_plugins() -> None:
    """Forget the process-wide manager and registry; the next use loads plugins again."""
    global _default_manager, _default_registry
    _default_manager = None
    _default_registry = None
