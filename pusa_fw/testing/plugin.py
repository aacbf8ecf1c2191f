"""Opt-in pytest plugin for people writing pusa-fw plugins.

Enable it in a test module or a root ``conftest.py``::

    pytest_plugins = ["pusa_fw.testing.plugin"]

Fixtures:
    plugin_manager: an isolated plugin manager with the pusa-fw hookspecs and *no* entry points loaded,
        installed as the process-wide manager for the duration of the test (so `pusa_fw.plugins.get_registry`
        and ``pusa_fw.cli.main`` see exactly what the test registers), and forgotten afterwards.
    register_plugin: ``register_plugin(plugin, name=None) -> Registry`` registers a plugin object
        (a module, class or instance with ``@hookimpl`` functions) into that manager, checks its hook
        names, and returns the registry rebuilt from every plugin registered so far.

Example::

    def test_my_schedule(register_plugin):
        registry = register_plugin(my_plugin.hooks, name="mine")
        assert registry.schedule("my-grid").name == "my-grid"

The built-in schedules and tasks are not loaded; register ``pusa_fw_schedules.hooks`` (name
``"schedules"``) yourself when a test needs them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pluggy
import pytest

from ..plugins import (
    check_pending,
    get_registry,
    install_plugin_manager,
    make_plugin_manager,
    reset_plugins,
)
from ..plugins import register_plugin as _register_with_manager
from ..registry import Registry

RegisterPlugin = Callable[..., Registry]


@pytest.fixture
def plugin_manager() -> Iterator[pluggy.PluginManager]:
    """An isolated plugin manager (no entry points, no env switches), the process default during the test."""
    manager = make_plugin_manager(entrypoints=False, environ={})
    install_plugin_manager(manager)
    try:
        yield manager
    finally:
        reset_plugins()


@pytest.fixture
def register_plugin(plugin_manager: pluggy.PluginManager) -> RegisterPlugin:
    """A function ``(plugin, name=None) -> Registry`` that adds a plugin to the isolated manager.

    Raises (from the returned function):
        PluginError: The plugin's hooks are misspelled or do not fit their specs.
        DuplicateComponentError: It registers a name another registered plugin already took.
    """

    def register(plugin: object, name: str | None = None) -> Registry:
        _register_with_manager(plugin_manager, plugin, name=name)
        check_pending(plugin_manager)
        install_plugin_manager(plugin_manager)
        return get_registry()

    return register
