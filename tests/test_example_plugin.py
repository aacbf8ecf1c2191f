"""The example third-party plugin: installed with pip into a temp dir, discovered through its entry point,
usable from the CLI and from Python, and composable with the built-in tasks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_SOURCE = REPO_ROOT / "examples" / "pusa-fw-example-plugin"


@pytest.fixture(scope="module")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the example plugin pip-installed into it (offline: no deps, no build isolation)."""
    work = tmp_path_factory.mktemp("example-plugin")
    source = work / "source"  # build from a copy so no build/ or egg-info lands in the repository
    ignored = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    shutil.copytree(EXAMPLE_SOURCE, source, ignore=ignored)
    site = work / "site"
    completed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-input", "--disable-pip-version-check", "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert (site / "pusa_fw_example" / "hooks.py").is_file()
    return site


def subprocess_env(site: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PUSA_FW_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH", "")]))
    env["MPLBACKEND"] = "Agg"
    return env


def pusa_fw_command() -> list[str]:
    """The installed console script beside this interpreter, else the module entry (same `main`)."""
    script = Path(sys.executable).with_name("pusa-fw")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "pusa_fw.cli"]


def run_cli(site: Path, *argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*pusa_fw_command(), *argv], capture_output=True, text=True, env=subprocess_env(site), cwd=cwd,
        timeout=300, check=False,
    )


def test_cli_plugins_lists_the_example_and_its_components(example_site):
    completed = run_cli(example_site, "plugins")
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("example  "))
    assert "pusa_fw_example.hooks" in lines[start] and "pusa-fw-example-plugin 0.1.0" in lines[start]
    block = []
    for line in lines[start + 1:]:
        if not line.startswith("    "):
            break
        block.append(line)
    listed = {line.split(":")[0].strip(): line.split(":", 1)[1].strip() for line in block}
    assert listed == {"schedules": "linear", "tasks": "linear-t2v"}


def test_cli_plan_linear_t2v_prints_the_table_and_writes_a_png(example_site, tmp_path):
    from PIL import Image

    completed = run_cli(example_site, "plan", "linear-t2v", "--num-frames", "17", "--steps", "4",
                        "--sigma-max", "0.8", "--png", "linear.png", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("linear-t2v: 5 latent frames x 4 steps")
    rows = [line for line in completed.stdout.splitlines() if "|" in line][1:]
    assert len(rows) == 5
    expected_cells = [f"{round(100 * sigma):d}" for sigma in torch.linspace(0.8, 0.0, 5).tolist()]
    for row in rows:
        assert row.split("|")[1].split() == expected_cells
    with Image.open(tmp_path / "linear.png") as image:
        assert image.format == "PNG" and min(image.size) > 50


PYTHON_CHECK = textwrap.dedent(
    """
    import json, sys
    from pusa_fw.cli import main
    from pusa_fw.plugins import DISABLE_ENV, build_registry, get_registry, make_plugin_manager
    from pusa_fw.plan import Plan
    from pusa_fw.schedule import TimestepSchedule
    from pusa_fw.task import Task

    registry = get_registry()
    schedule_cls = registry.schedule("linear-grid")
    task_cls = registry.task("linear-t2v")
    grid = schedule_cls(sigma_max=0.9).grid(num_latent_frames=6, num_steps=8)
    plan = task_cls(sigma_max=0.9).plan(num_frames=21, num_steps=8, shift=3.0)
    via_t2v = registry.task("t2v")(schedule="linear", schedule_params={"sigma_max": 0.9}).plan(21, 8)
    disabled = build_registry(make_plugin_manager(environ={DISABLE_ENV: "example"}))
    json.dump({
        "schedule_is_timestep_schedule": issubclass(schedule_cls, TimestepSchedule),
        "task_is_task": issubclass(task_cls, Task),
        "providers": [registry.entry(kind, name).plugin
                      for kind, name in (("schedules", "linear"), ("tasks", "linear-t2v"))],
        "grid": grid.tolist(),
        "plan_is_plan": isinstance(plan, Plan),
        "plan_sigmas": plan.sigmas.tolist(),
        "plan_held": plan.held.tolist(),
        "plan_windows": plan.windows.tolist(),
        "t2v_on_linear_equal": bool((via_t2v.sigmas == plan.sigmas).all()),
        "disabled_has_linear": ("schedules", "linear") in disabled,
        "disabled_has_t2v": ("tasks", "t2v") in disabled,
    }, sys.stdout)
    """
)


def test_python_resolves_the_new_schedule_and_task_and_builds_a_valid_plan(example_site):
    completed = subprocess.run([sys.executable, "-c", PYTHON_CHECK], capture_output=True, text=True,
                               env=subprocess_env(example_site), timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["schedule_is_timestep_schedule"] and result["task_is_task"] and result["plan_is_plan"]
    assert result["providers"] == ["example", "example"]
    sequence = torch.linspace(0.9, 0.0, 9)
    every_frame = sequence[:, None].expand(9, 6)
    torch.testing.assert_close(torch.tensor(result["grid"]), every_frame, rtol=0, atol=1e-7)
    torch.testing.assert_close(torch.tensor(result["plan_sigmas"]), every_frame, rtol=0, atol=1e-7)
    assert result["plan_held"] == [False] * 6
    assert result["plan_windows"] == [[0, 6]] * 8
    assert result["t2v_on_linear_equal"], "the built-in t2v on the plugin's schedule must match linear-t2v"
    assert result["disabled_has_t2v"] and not result["disabled_has_linear"]
