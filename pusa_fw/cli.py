"""The ``pusa-fw`` command line: built-in sub-commands plus those plugins register.

``main`` loads the plugins, builds an argparse parser with one sub-command per command object (the
built-ins in `pusa_fw.cli_commands` and everything registered through ``register_commands``) and runs
the chosen one. Any `PusaError` or pydantic ``ValidationError`` a command raises becomes one line,
``pusa-fw: error: ...``, on stderr and exit status 2, with no traceback.

Example:
    ``pusa-fw plugins``, ``pusa-fw tasks``, ``pusa-fw plan i2v --num-frames 33 --steps 8 --png plan.png``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from .cli_commands import BUILTIN_COMMANDS
from .cli_params import one_line_validation_error
from .errors import DuplicateComponentError, PluginError, PusaError
from .plugins import DISABLE_ENV, LOAD_ENV, get_registry
from .registry import Registry

PROG = "pusa-fw"
EXIT_USAGE = 2
"""Exit status for bad input of any kind (argparse uses the same)."""


def collect_commands(registry: Registry) -> dict[str, Any]:
    """The built-in commands and the plugins' commands, by name.

    Raises:
        DuplicateComponentError: A plugin command reuses a built-in command's name.
        PluginError: A plugin command lacks ``add_arguments`` or ``run``.
    """
    commands: dict[str, Any] = {command.name: command for command in BUILTIN_COMMANDS}
    for entry in registry.entries("commands"):
        methods = ("add_arguments", "run")
        missing = [method for method in methods if not callable(getattr(entry.component, method, None))]
        if missing:
            raise PluginError(
                f"command {entry.name!r} of plugin {entry.plugin!r} has no {' or '.join(missing)} method; a "
                "command needs name, help, add_arguments(parser) and run(args) -> int (register an instance)"
            )
        if entry.name in commands:
            raise DuplicateComponentError(
                f"command name {entry.name!r} is registered twice: by pusa-fw itself (built-in) and by "
                f"plugin {entry.plugin!r}; rename the plugin's command or disable it with "
                f"{DISABLE_ENV}={entry.plugin}"
            )
        commands[entry.name] = entry.component
    return commands


def build_parser(commands: dict[str, Any]) -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per command (each adds its own arguments)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Composable per-frame timestep schedules for video diffusion (Pusa on Wan2.1).",
        epilog=(
            f"Plugins load from the 'pusa_fw' entry-point group; {DISABLE_ENV}=a,b skips plugins, "
            f"{LOAD_ENV}=a,b loads only those ({LOAD_ENV}= loads none)."
        ),
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in commands.items():
        subparser = subparsers.add_parser(name, help=getattr(command, "help", None))
        command.add_arguments(subparser)
    return parser


def _one_line(error: BaseException) -> str:
    if isinstance(error, ValidationError):
        text = f"invalid {error.title}: {one_line_validation_error(error)}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pusa-fw`` with ``argv`` (``sys.argv[1:]`` when None) and return the exit status.

    Args:
        argv: Command-line arguments without the program name.

    Returns:
        0 on success, 2 on bad input or a pusa-fw error (one line on stderr), or what the command returns.
    """
    try:
        commands = collect_commands(get_registry())
        parser = build_parser(commands)
        args = parser.parse_args(None if argv is None else list(argv))
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        status = commands[args.command].run(args)
        return 0 if status is None else int(status)
    except (PusaError, ValidationError) as error:
        sys.stderr.write(f"{PROG}: error: {_one_line(error)}\n")
        return EXIT_USAGE
    except SystemExit as exit_request:  # argparse --help and usage errors
        code = exit_request.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_USAGE)


if __name__ == "__main__":
    sys.exit(main())
