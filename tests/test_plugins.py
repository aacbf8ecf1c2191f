"""The plugin host: registry, pluggy loading, env switches, check_pending, provenance, errors."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from types import SimpleNamespace

import pytest

from pusa_fw import hookspecs, plugins
from pusa_fw.errors import DuplicateComponentError, PluginError, UnknownComponentError
from pusa_fw.hookspecs import hookimpl
from pusa_fw.registry import KINDS, Registry

pytest_plugins = ["pusa_fw.testing.plugin"]


class Named:
    """A tiny component with a ``name`` attribute."""

    def __init__(self, name: str) -> None:
        self.name = name


class GridPlugin:
    """Registers two schedules and a task; counts how often its hooks run."""

    def __init__(self, schedule_names: tuple[str, ...] = ("ramp", "flat"), task_name: str = "toy") -> None:
        self.schedule_names = schedule_names
        self.task_name = task_name
        self.calls = 0

    @hookimpl
    def register_schedules(self, register):
        self.calls += 1
        for name in self.schedule_names:
            register(Named(name), aliases=(f"{name}-grid",))

    @hookimpl
    def register_tasks(self, register):
        register(Named(self.task_name))


def installed_plugin_names() -> set[str]:
    entry_points = importlib.metadata.entry_points(group=plugins.ENTRYPOINT_GROUP)
    return {entry_point.name for entry_point in entry_points}


# ----------------------------------------------------------------------------------------------- Registry
def test_registry_resolves_names_and_aliases_and_records_provenance():
    registry = Registry()
    component = Named("ramp")
    entry = registry.register("schedules", component, plugin="grids", aliases=("linear-ramp",))
    assert entry.plugin == "grids" and entry.aliases == ("linear-ramp",)
    assert registry.get("schedules", "ramp") is component
    assert registry.schedule("linear-ramp") is component
    assert registry.entry("schedules", "linear-ramp").name == "ramp"
    assert ("schedules", "linear-ramp") in registry and ("tasks", "ramp") not in registry
    assert registry.names("schedules") == ["ramp"]
    assert registry.names("schedules", with_aliases=True) == ["linear-ramp", "ramp"]
    assert registry.by_plugin("grids") == {"schedules": ["ramp"]}


def test_registry_explicit_name_overrides_attribute_and_missing_name_is_an_error():
    registry = Registry()
    registry.register("tasks", Named("inner"), plugin="p", name="outer")
    assert registry.names("tasks") == ["outer"]
    with pytest.raises(PluginError, match=r"without a name.*name='\.\.\.'"):
        registry.register("tasks", object(), plugin="p")
    with pytest.raises(PluginError, match="'has space'"):
        registry.register("tasks", Named("has space"), plugin="p")
    with pytest.raises(PluginError, match=r"aliases must be a sequence"):
        registry.register("tasks", Named("x"), plugin="p", aliases="y")


def test_unknown_name_lists_known_names_and_the_closest_match():
    registry = Registry()
    registry.register("schedules", Named("pyramid"), plugin="p")
    registry.register("schedules", Named("shifted"), plugin="p")
    with pytest.raises(UnknownComponentError) as caught:
        registry.get("schedules", "pyramd")
    message = str(caught.value)
    assert "'pyramd'" in message and "pyramid, shifted" in message and "Did you mean 'pyramid'" in message
    with pytest.raises(UnknownComponentError, match="kinds are: schedules"):
        registry.get("schedule", "pyramid")


@pytest.mark.parametrize("clash", ["name", "alias-on-name", "name-on-alias"])
def test_duplicate_names_and_aliases_name_both_plugins(clash):
    registry = Registry()
    registry.register("tasks", Named("i2v"), plugin="first-plugin", aliases=("image",))
    new_name, aliases = {"name": ("i2v", ()), "alias-on-name": ("other", ("i2v",)),
                         "name-on-alias": ("image", ())}[clash]
    with pytest.raises(DuplicateComponentError) as caught:
        registry.register("tasks", Named(new_name), plugin="second-plugin", aliases=aliases)
    assert "'first-plugin'" in str(caught.value) and "'second-plugin'" in str(caught.value)
    assert registry.names("tasks", with_aliases=True) == ["i2v", "image"]  # nothing half-registered


def test_every_hookspec_has_a_registry_kind_and_vice_versa():
    hook_names = {name for name in dir(hookspecs) if name.startswith("register_")}
    assert hook_names == {f"register_{kind}" for kind in KINDS}


# ------------------------------------------------------------------------------------- Loading and hooks
def test_build_registry_calls_each_hook_once_and_records_which_plugin_registered_what():
    first, second = GridPlugin(), GridPlugin(schedule_names=("pyramid",), task_name="keys")
    manager = plugins.make_plugin_manager(
        entrypoints=False, plugins={"alpha": first, "beta": second}, environ={}
    )
    registry = plugins.build_registry(manager)
    assert first.calls == 1 and second.calls == 1
    assert registry.entry("schedules", "ramp-grid").plugin == "alpha"
    assert registry.entry("schedules", "pyramid").plugin == "beta"
    assert registry.by_plugin("beta") == {"schedules": ["pyramid"], "tasks": ["keys"]}
    infos = {info.name: info for info in plugins.describe_plugins(manager, registry)}
    assert infos["alpha"].registered == {"schedules": ["flat", "ramp"], "tasks": ["toy"]}
    assert infos["alpha"].distribution is None


def test_duplicate_name_across_two_pluggy_plugins_names_both(register_plugin):
    register_plugin(GridPlugin(), name="grids-one")
    with pytest.raises(DuplicateComponentError) as caught:
        register_plugin(GridPlugin(schedule_names=("flat",), task_name="other"), name="grids-two")
    message = str(caught.value)
    assert "'flat'" in message and "'grids-one'" in message and "'grids-two'" in message
    assert "PUSA_FW_DISABLE_PLUGINS" in message


def test_check_pending_catches_a_misspelled_hook_and_suggests_the_right_one():
    class Typo:
        @hookimpl
        def register_schedule(self, register):  # missing "s"
            register(Named("never"))

    with pytest.raises(PluginError) as caught:
        plugins.make_plugin_manager(entrypoints=False, plugins={"typo": Typo()}, environ={})
    message = str(caught.value)
    assert "'typo'" in message and "'register_schedule'" in message
    assert "did you mean 'register_schedules'" in message


def test_hookimpl_with_an_argument_not_in_the_spec_is_a_plugin_error():
    class WrongArgument:
        @hookimpl
        def register_tasks(self, registry):
            pass

    with pytest.raises(PluginError, match="'wrong'"):
        plugins.make_plugin_manager(entrypoints=False, plugins={"wrong": WrongArgument()}, environ={})


def test_a_hook_that_raises_becomes_a_plugin_error_naming_the_plugin():
    class Exploding:
        @hookimpl
        def register_samplers(self, register):
            raise RuntimeError("boom")

    manager = plugins.make_plugin_manager(entrypoints=False, plugins={"exploding": Exploding()}, environ={})
    with pytest.raises(PluginError, match=r"'exploding' failed in register_samplers: RuntimeError: boom"):
        plugins.build_registry(manager)


def test_hookimpl_may_opt_out_of_the_register_argument():
    calls = []

    class NoArguments:
        @hookimpl
        def register_backbones(self):
            calls.append("called")

    manager = plugins.make_plugin_manager(entrypoints=False, plugins={"quiet": NoArguments()}, environ={})
    registry = plugins.build_registry(manager)
    assert calls == ["called"] and registry.names("backbones") == []


# ----------------------------------------------------------------------------------- Entry points and env
def test_first_party_plugins_load_through_entry_points():
    manager = plugins.make_plugin_manager(environ={})
    assert {"schedules", "wan"} <= {name for name, _ in manager.list_name_plugin()}
    distributions = {
        manager.get_name(plugin): dist.project_name for plugin, dist in manager.list_plugin_distinfo()
    }
    assert distributions["schedules"] == "pusa-fw" and distributions["wan"] == "pusa-fw"


def test_disable_switch_blocks_named_plugins():
    manager = plugins.make_plugin_manager(environ={plugins.DISABLE_ENV: "wan, nonexistent"})
    loaded = {name for name, plugin in manager.list_name_plugin() if plugin is not None}
    assert "wan" not in loaded and "schedules" in loaded
    assert plugins.blocked_plugins(manager) == ["nonexistent", "wan"]


def test_load_switch_empty_loads_no_entry_points_and_a_list_loads_only_those():
    nothing = plugins.make_plugin_manager(environ={plugins.LOAD_ENV: ""})
    assert [name for name, _ in nothing.list_name_plugin()] == ["core"]  # the core's samplers, always
    only = plugins.make_plugin_manager(environ={plugins.LOAD_ENV: "schedules"})
    assert [name for name, _ in only.list_name_plugin()] == ["core", "schedules"]
    assert installed_plugin_names() > {"schedules"}  # there was something to leave out


def test_load_switch_with_an_unknown_name_is_an_error_listing_installed_plugins():
    with pytest.raises(PluginError) as caught:
        plugins.make_plugin_manager(environ={plugins.LOAD_ENV: "schedules,shedules"})
    assert "'shedules'" in str(caught.value) and "schedules, " in str(caught.value)


def _fake_distribution(site: Path, dist_name: str, entry_points: str) -> None:
    """Write a minimal installed distribution (dist-info with METADATA and entry_points.txt) into `site`."""
    info = site / f"{dist_name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[pusa_fw]\n{entry_points}\n")


def test_broken_entry_point_gives_a_plugin_error_naming_distribution_and_switch(tmp_path, monkeypatch):
    _fake_distribution(tmp_path, "pusa-fw-broken", "broken = pusa_fw_no_such_module.hooks")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError) as caught:
        plugins.make_plugin_manager(environ={})
    message = str(caught.value)
    assert "'broken'" in message and "'pusa-fw-broken'" in message
    assert "PUSA_FW_DISABLE_PLUGINS=broken" in message
    assert isinstance(caught.value.__cause__, ImportError)
    manager = plugins.make_plugin_manager(environ={plugins.DISABLE_ENV: "broken"})
    assert manager.has_plugin("schedules") and plugins.blocked_plugins(manager) == ["broken"]


def test_same_entry_point_name_from_two_distributions_is_an_error(tmp_path, monkeypatch):
    _fake_distribution(tmp_path, "pusa-fw-other", "schedules = pusa_fw_other.hooks")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="two distributions") as caught:
        plugins.make_plugin_manager(environ={})
    assert "'schedules'" in str(caught.value)
    assert "'pusa-fw'" in str(caught.value) and "'pusa-fw-other'" in str(caught.value)


# ------------------------------------------------------------------------------------ Process-wide state
def test_default_registry_is_built_once_and_reset_forgets_it():
    plugin = GridPlugin()
    manager = plugins.make_plugin_manager(entrypoints=False, plugins={"counted": plugin}, environ={})
    plugins.install_plugin_manager(manager)
    try:
        first = plugins.get_registry()
        assert plugins.get_registry() is first and plugin.calls == 1
        assert plugins.load_plugins() is manager
        plugins.reset_plugins()
        assert plugins.load_plugins() is not manager
    finally:
        plugins.reset_plugins()


def test_testing_fixtures_give_an_isolated_manager_installed_as_default(plugin_manager, register_plugin):
    assert [name for name, _ in plugin_manager.list_name_plugin()] == ["core"]
    registry = register_plugin(GridPlugin(), name="mine")
    assert registry.entry("tasks", "toy").plugin == "mine"
    assert plugins.get_registry() is registry and plugins.load_plugins() is plugin_manager
    with pytest.raises(PluginError, match="'late-typo'"):
        register_plugin(SimpleNamespace(register_task=hookimpl(lambda register: None)), name="late-typo")


def test_the_core_samples_with_its_default_sampler_when_every_plugin_is_off():
    import torch

    from pusa_fw import sample
    from pusa_fw.task import compose_plan
    from pusa_fw.testing.fakes import ExactVelocityBackbone, FrameTargets

    manager = plugins.make_plugin_manager(environ={plugins.LOAD_ENV: ""})
    registry = plugins.build_registry(manager)
    assert registry.by_plugin("core") == {
        "samplers": ["euler", "lcm", "unipc"], "caches": ["framecache", "none", "teacache"]
    }
    plugins.install_plugin_manager(manager)
    try:
        grid = torch.tensor([[1.0, 1.0], [0.5, 0.2], [0.0, 0.0]])
        x0 = torch.randn(1, 2, 2, 2, 2)
        out = sample(ExactVelocityBackbone(), compose_plan(grid), torch.randn_like(x0), context=FrameTargets(x0))
        assert float((out - x0).abs().max()) < 1e-5
    finally:
        plugins.reset_plugins()
    with pytest.raises(PluginError, match="'core', the core's own plugin"):
        plugins.make_plugin_manager(environ={plugins.DISABLE_ENV: "core"})
