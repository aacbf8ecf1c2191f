"""The ``pusa-fw`` CLI: built-in commands, generated task options, plugin commands, one-line errors."""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from pusa_fw import plugins
from pusa_fw.cli import main
from pusa_fw.errors import PlanError
from pusa_fw.hookspecs import hookimpl

pytest_plugins = ["pusa_fw.testing.plugin"]


class StandInPlan:
    """Records what it was built from; `table` and `summary` echo it, `save_heatmap` writes a marker."""

    def __init__(self, task: BaseModel, num_frames: int, num_steps: int, shift: float) -> None:
        self.record = {"params": task.model_dump(mode="json"), "num_frames": num_frames, "num_steps": num_steps,
                       "shift": shift}

    def table(self) -> str:
        return "TABLE " + json.dumps(self.record, sort_keys=True)

    def summary(self) -> dict[str, Any]:
        return dict(self.record)

    def save_heatmap(self, path) -> None:
        path.write_bytes(b"\x89PNG stand-in")


class ToyTask(BaseModel):
    """A task following the `pusa_fw.task.Task` API, with one field of each kind the CLI handles."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: ClassVar[str] = "toy"
    summary: ClassVar[str] = "a toy task for CLI tests"

    positions: tuple[int, ...] = Field((0, 8), description="pixel-frame positions")
    strength: float = Field(0.8, ge=0, le=1, description="hold strength")
    loop: bool = Field(False, description="wrap around")
    mode: Literal["soft", "hard"] = Field("soft", description="how frames are held")
    schedule_params: dict[str, Any] = Field(default_factory=dict, description="schedule parameters")

    def plan(self, num_frames: int = 81, num_steps: int = 10, shift: float = 5.0) -> StandInPlan:
        if num_steps > 50:
            raise PlanError(f"num_steps={num_steps} is too many for the toy task; use <= 50")
        return StandInPlan(self, num_frames, num_steps, shift)


class NeedsSeed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: ClassVar[str] = "seeded"
    summary: ClassVar[str] = "has a required parameter"
    seed: int = Field(description="random seed")

    def plan(self, num_frames: int = 81, steps: int = 10, shift: float = 5.0) -> StandInPlan:
        return StandInPlan(self, num_frames, steps, shift)


class ClashingTask(NeedsSeed):
    name: ClassVar[str] = "clashing"
    steps: int = 3


class EchoCommand:
    name = "echo"
    help = "print the words back"

    def add_arguments(self, parser):
        parser.add_argument("words", nargs="*")
        parser.add_argument("--status", type=int, default=0)

    def run(self, args) -> int:
        print("echo:", " ".join(args.words))
        if args.words == ["validate"]:
            ToyTask(strength=7)  # a pydantic ValidationError escaping a command
        return args.status


class ToyPlugin:
    @hookimpl
    def register_tasks(self, register):
        register(ToyTask, aliases=("toy-task",))
        register(NeedsSeed)

    @hookimpl
    def register_schedules(self, register):
        register(ToyTask, name="toy-grid")

    @hookimpl
    def register_commands(self, register):
        register(EchoCommand())


@pytest.fixture
def toy_cli(register_plugin):
    register_plugin(ToyPlugin(), name="toys")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_line_error(status: int, err: str, *fragments: str) -> None:
    assert status == 2
    assert err.startswith("pusa-fw: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_plugins_lists_each_plugin_and_what_it_registered(toy_cli, capsys):
    status, out, _ = run_cli(capsys, "plugins")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith("core  (") and lines[1].split() == ["samplers:", "euler,", "lcm,", "unipc"]
    assert lines[2].split() == ["caches:", "framecache,", "none,", "teacache"]
    assert lines[3].startswith("toys  (")
    listed = {line.split(":")[0].strip(): line.split(":", 1)[1].strip() for line in lines[4:]}
    assert listed == {"schedules": "toy-grid", "tasks": "seeded, toy", "commands": "echo"}
    status, out, _ = run_cli(capsys, "plugins", "--json")
    listing = json.loads(out)
    assert [plugin["name"] for plugin in listing["plugins"]] == ["core", "toys"]
    assert listing["plugins"][1]["registered"] == {
        "schedules": ["toy-grid"], "tasks": ["seeded", "toy"], "commands": ["echo"]}


def test_tasks_lists_parameters_with_type_default_and_description(toy_cli, capsys):
    status, out, _ = run_cli(capsys, "tasks")
    assert status == 0
    assert "toy (aliases: toy-task)  [plugin toys]  a toy task for CLI tests" in out
    line = next(line for line in out.splitlines() if "--positions" in line)
    assert "tuple[int, ...]" in line and "default [0, 8]" in line and "pixel-frame positions" in line
    assert any("--seed" in line and "required" in line for line in out.splitlines())
    status, out, _ = run_cli(capsys, "tasks", "toy", "--json")
    (toy,) = json.loads(out)
    by_name = {parameter["name"]: parameter for parameter in toy["parameters"]}
    assert by_name["mode"]["type"] == "Literal['soft', 'hard']" and by_name["loop"]["default"] is False
    assert by_name["schedule_params"]["option"] == "--schedule-params"


def test_plan_converts_every_option_kind_and_passes_plan_options(toy_cli, capsys):
    status, out, _ = run_cli(
        capsys, "plan", "toy-task", "--positions", "0, 40,80", "--loop", "TRUE", "--mode", "hard",
        "--strength", "0.25", "--schedule-params", '{"rate": 2}', "--num-frames", "33", "--steps", "4",
        "--shift", "3",
    )
    assert status == 0
    record = json.loads(out.removeprefix("TABLE "))
    assert record == {
        "params": {"positions": [0, 40, 80], "strength": 0.25, "loop": True, "mode": "hard",
                   "schedule_params": {"rate": 2}},
        "num_frames": 33, "num_steps": 4, "shift": 3.0,
    }


def test_plan_defaults_json_output_and_png(toy_cli, capsys, tmp_path):
    target = tmp_path / "plan.png"
    status, out, err = run_cli(capsys, "plan", "toy", "--json", "--png", str(target))
    assert status == 0 and json.loads(out)["num_frames"] == 81 and json.loads(out)["num_steps"] == 10
    assert target.read_bytes().startswith(b"\x89PNG") and str(target) in err


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--positions", "0,x"], ["task 'toy'", "--positions[1]", "valid integer", "'x'"]),
        (["--strength", "2"], ["--strength", "less than or equal to 1", "'2'"]),
        (["--loop", "maybe"], ["--loop takes true or false", "'maybe'"]),
        (["--mode", "medium"], ["--mode", "'soft' or 'hard'"]),
        (["--schedule-params", "{oops"], ["--schedule-params takes JSON"]),
        (["--steps", "60"], ["steps=60 is too many"]),
        (["--png", "plan.jpg"], ["--png", "must end in .png"]),
        (["--png", "no/such/dir/plan.png"], ["does not exist"]),
    ],
)
def test_bad_plan_input_is_one_line_naming_the_option(toy_cli, capsys, argv, fragments):
    status, out, err = run_cli(capsys, "plan", "toy", *argv)
    assert_one_line_error(status, err, *fragments)
    assert out == ""


def test_unknown_task_missing_task_and_missing_required_parameter(toy_cli, capsys):
    status, _, err = run_cli(capsys, "plan", "tyo")
    assert_one_line_error(status, err, "unknown task 'tyo'", "seeded, toy, toy-task", "Did you mean 'toy'")
    status, _, err = run_cli(capsys, "plan")
    assert_one_line_error(status, err, "plan needs a task", "seeded, toy")
    status, _, err = run_cli(capsys, "plan", "seeded")
    assert status == 2 and "--seed" in err and "required" in err


def test_plan_task_help_shows_the_task_options(toy_cli, capsys):
    status, out, _ = run_cli(capsys, "plan", "toy", "--help")
    assert status == 0
    for option in ("--num-frames", "--steps", "--shift", "--png", "--positions", "--schedule-params"):
        assert option in out
    assert "a toy task for CLI tests" in out


def test_task_field_clashing_with_a_plan_option_is_a_plugin_error(register_plugin, capsys):
    class ClashPlugin:
        @hookimpl
        def register_tasks(self, register):
            register(ClashingTask)

    register_plugin(ClashPlugin(), name="clash")
    status, _, err = run_cli(capsys, "plan", "clashing")
    assert_one_line_error(status, err, "'steps'", "--steps", "rename the field")


def test_plugin_commands_run_and_their_errors_are_one_line(toy_cli, capsys):
    status, out, _ = run_cli(capsys, "echo", "hello", "world", "--status", "3")
    assert status == 3 and out == "echo: hello world\n"
    status, _, err = run_cli(capsys, "echo", "validate")
    assert_one_line_error(status, err, "invalid ToyTask", "strength", "less than or equal to 1")


def test_plugin_command_named_like_a_builtin_is_an_error_naming_the_plugin(register_plugin, capsys):
    class Shadow(EchoCommand):
        name = "plan"

    class ShadowPlugin:
        @hookimpl
        def register_commands(self, register):
            register(Shadow())

    register_plugin(ShadowPlugin(), name="shadow")
    status, _, err = run_cli(capsys, "plugins")
    assert_one_line_error(status, err, "'plan'", "built-in", "'shadow'", "PUSA_FW_DISABLE_PLUGINS=shadow")


def test_no_command_prints_help_and_a_usage_error_exits_2(toy_cli, capsys):
    status, _, err = run_cli(capsys)
    assert status == 2 and "plugins" in err and "echo" in err
    status, _, err = run_cli(capsys, "plugins", "--bogus")
    assert status == 2 and "unrecognized arguments: --bogus" in err


def test_plugin_load_failure_is_one_line(capsys, monkeypatch):
    monkeypatch.setenv(plugins.LOAD_ENV, "no-such-plugin")
    plugins.reset_plugins()
    try:
        status, _, err = run_cli(capsys, "plugins")
    finally:
        plugins.reset_plugins()
    assert_one_line_error(status, err, "PUSA_FW_LOAD_PLUGINS", "'no-such-plugin'")



# ------------------------------------------------------------------ against the real, installed plugins
@pytest.fixture
def real_plugins(monkeypatch):
    """The process-wide registry built from the installed entry points, with no env switches set."""
    for variable in (plugins.DISABLE_ENV, plugins.LOAD_ENV):
        monkeypatch.delenv(variable, raising=False)
    plugins.reset_plugins()
    yield plugins.get_registry()
    plugins.reset_plugins()


def test_plan_i2v_prints_the_real_plan_table_and_heatmap(real_plugins, capsys, tmp_path):
    from PIL import Image

    target = tmp_path / "i2v.png"
    status, out, err = run_cli(capsys, "plan", "i2v", "--num-frames", "17", "--steps", "5",
                               "--strength", "0.9", "--shift", "3", "--png", str(target))
    assert status == 0, err
    expected = real_plugins.task("i2v")(strength=0.9).plan(num_frames=17, num_steps=5, shift=3.0)
    assert out == expected.table() + "\n"
    assert expected.held.tolist() == [True, False, False, False, False]
    with Image.open(target) as image:
        assert image.format == "PNG" and min(image.size) > 50


def test_plan_keyframes_positions_reach_the_task(real_plugins, capsys):
    from pusa_fw.frames import latent_index

    positions = [0, 8, 16]
    status, out, err = run_cli(capsys, "plan", "keyframes", "--num-frames", "17", "--steps", "4",
                               "--positions", ",".join(map(str, positions)), "--json")
    assert status == 0, err
    summary = json.loads(out)
    assert summary["held_frames"] == [latent_index(position, 17) for position in positions]
    assert summary["meta"]["params"]["positions"] == positions and summary["num_steps"] == 4
    status, _, err = run_cli(capsys, "plan", "keyframes", "--positions", "0,x")
    assert_one_line_error(status, err, "task 'keyframes'", "--positions[1]", "'x'")
    status, _, err = run_cli(capsys, "plan", "t2v", "--num-frames", "80")
    assert_one_line_error(status, err, "num_frames=80", "4n+1")


def test_tasks_lists_every_real_task_with_every_parameter(real_plugins, capsys):
    status, out, _ = run_cli(capsys, "tasks", "--json")
    assert status == 0
    tasks = json.loads(out)
    listed = {task["name"]: [parameter["name"] for parameter in task["parameters"]] for task in tasks}
    assert {"t2v", "i2v", "keyframes"} <= set(listed)
    for name in real_plugins.names("tasks"):
        assert listed[name] == list(real_plugins.task(name).model_fields), name



class NoRunCommand:
    name = "broken"
    help = "has no run method"

    def add_arguments(self, parser):
        pass


class NotAModelTask:
    name = "plain"


@pytest.mark.parametrize(
    ("kind", "component", "fragments"),
    [
        ("commands", NoRunCommand(), ["command 'broken'", "'bad'", "no run method"]),
        ("tasks", NotAModelTask, ["task 'plain'", "not a pydantic model class"]),
    ],
)
def test_malformed_plugin_components_are_one_line_plugin_errors(register_plugin, capsys, kind, component,
                                                                 fragments):
    class BadPlugin:
        pass

    def register_one(register):
        register(component)

    setattr(BadPlugin, f"register_{kind}", staticmethod(hookimpl(register_one)))
    register_plugin(BadPlugin(), name="bad")
    status, _, err = run_cli(capsys, "tasks")
    assert_one_line_error(status, err, *fragments)
