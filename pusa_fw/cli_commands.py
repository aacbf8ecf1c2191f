"""The built-in ``pusa-fw`` sub-commands: ``plugins``, ``tasks`` and ``plan``.

Each command is an object with ``name``, ``help``, ``add_arguments(parser)`` and ``run(args) -> int``,
the same interface plugins use in ``register_commands``. Commands print; library code does not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .cli_params import add_task_options, task_from_options, task_parameters
from .errors import InputError
from .plugins import blocked_plugins, describe_plugins, get_registry, load_plugins
from .registry import Registry


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _table(rows: list[list[str]], indent: str = "") -> list[str]:
    """Left-aligned columns (the last column is not padded)."""
    if not rows:
        return []
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return [
        indent + "  ".join([cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]).rstrip()
        for row in rows
    ]


class PluginsCommand:
    """``pusa-fw plugins``: each loaded plugin and what it registered, per kind."""

    name = "plugins"
    help = "list the loaded plugins and what each registered"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add ``--json``."""
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")

    def run(self, args: argparse.Namespace) -> int:
        """Print the plugin listing."""
        manager = load_plugins()
        infos = describe_plugins(manager, get_registry())
        blocked = blocked_plugins(manager)
        if args.json:
            _out(json.dumps({"plugins": [info.as_dict() for info in infos], "disabled": blocked}, indent=2))
            return 0
        for info in infos:
            origin = f"{info.distribution} {info.version}" if info.distribution else "registered directly"
            _out(f"{info.name}  ({info.module}; {origin})")
            rows = [[f"{kind}:", ", ".join(names)] for kind, names in info.registered.items()]
            for line in _table(rows, indent="    ") or ["    (registered nothing)"]:
                _out(line)
        if not infos:
            _out("no plugins loaded")
        if blocked:
            _out(f"disabled: {', '.join(blocked)}")
        return 0


def _describe_task(registry: Registry, name: str) -> dict[str, Any]:
    entry = registry.entry("tasks", name)
    return {
        "name": entry.name,
        "aliases": list(entry.aliases),
        "plugin": entry.plugin,
        "summary": getattr(entry.component, "summary", ""),
        "parameters": [parameter.as_dict() for parameter in task_parameters(entry.component)],
    }


class TasksCommand:
    """``pusa-fw tasks``: each registered task with its parameters (name, type, default, description)."""

    name = "tasks"
    help = "list the tasks and their parameters"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add optional task names and ``--json``."""
        parser.add_argument("names", nargs="*", metavar="TASK", help="only these tasks (default: all)")
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")

    def run(self, args: argparse.Namespace) -> int:
        """Print the task listing."""
        registry = get_registry()
        names = args.names or registry.names("tasks")
        tasks = [_describe_task(registry, name) for name in names]
        if args.json:
            _out(json.dumps(tasks, indent=2))
            return 0
        for task in tasks:
            aliases = f" (aliases: {', '.join(task['aliases'])})" if task["aliases"] else ""
            _out(f"{task['name']}{aliases}  [plugin {task['plugin']}]  {task['summary']}".rstrip())
            rows = [
                [
                    parameter["option"],
                    parameter["type"],
                    "required" if parameter["required"] else f"default {json.dumps(parameter['default'])}",
                    parameter["description"],
                ]
                for parameter in task["parameters"]
            ]
            for line in _table(rows, indent="    ") or ["    (no parameters)"]:
                _out(line)
        if not tasks:
            _out("no tasks registered (is the pusa_fw schedules plugin installed and enabled?)")
        return 0


class PlanCommand:
    """``pusa-fw plan TASK [options]``: print a task's plan as a frames-by-steps table, or draw it."""

    name = "plan"
    help = "print a task's plan as a frames-by-steps table (and a PNG heatmap with --png)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the task name; everything after it is parsed per task (see ``pusa-fw plan TASK --help``)."""
        parser.description = (
            "Compile TASK to its plan and print it. Options (run `pusa-fw plan TASK --help` for the task's "
            "own ones): --num-frames N (pixel frames, 4n+1; default 81), --num-steps S (alias --steps; default 10), "
            "--shift X (default 5.0), --png FILE, --json, and one --param-name VALUE per task parameter."
        )
        parser.add_argument("task", nargs="?", metavar="TASK", help="task name (see `pusa-fw tasks`)")
        parser.add_argument("task_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def run(self, args: argparse.Namespace) -> int:
        """Build the task from its options, compile the plan, print it and optionally save a heatmap."""
        registry = get_registry()
        if args.task is None:
            known = ", ".join(registry.names("tasks")) or "(none)"
            raise InputError(f"plan needs a task: pusa-fw plan TASK [options]; tasks: {known}")
        entry = registry.entry("tasks", args.task)
        task_cls = entry.component
        parser = argparse.ArgumentParser(
            prog=f"pusa-fw plan {entry.name}", description=getattr(task_cls, "summary", None)
        )
        parser.add_argument("--num-frames", type=int, default=81, help="pixel frames, 4n+1 (default: 81)")
        parser.add_argument("--num-steps", "--steps", dest="num_steps", type=int, default=10,
                            help="denoising steps (default: 10)")
        parser.add_argument("--shift", type=float, default=5.0, help="sigma shift (default: 5.0)")
        parser.add_argument("--png", type=Path, metavar="FILE", help="also write the plan as a PNG heatmap")
        parser.add_argument("--json", action="store_true", help="print the plan summary as JSON, not a table")
        add_task_options(parser, task_cls)
        options = parser.parse_args(args.task_args)
        if options.png is not None:
            _check_png_path(options.png)
        task = task_from_options(task_cls, options)
        plan = task.plan(num_frames=options.num_frames, num_steps=options.num_steps, shift=options.shift)
        if options.json:
            _out(json.dumps(plan.summary(), indent=2))
        else:
            _out(plan.table())
        if options.png is not None:
            plan.save_heatmap(options.png)
            sys.stderr.write(f"pusa-fw: heatmap written to {options.png}\n")
        return 0


def _check_png_path(path: Path) -> None:
    if path.suffix.lower() != ".png":
        raise InputError(f"--png {str(path)!r}: the file name must end in .png (e.g. --png {path.stem}.png)")
    if not path.parent.is_dir():
        raise InputError(f"--png {str(path)!r}: folder {str(path.parent)!r} does not exist; create it first")


BUILTIN_COMMANDS: tuple[Any, ...] = (PluginsCommand(), TasksCommand(), PlanCommand())
"""The commands every ``pusa-fw`` has; plugin commands may not reuse their names."""
