"""The ``pusa-fw generate`` command, registered through the ``register_commands`` hook.

Its flags are generated from `GenerateConfig` (one per field: ``num_frames`` -> ``--num-frames``), so the
flags and ``--config run.toml`` are validated by the same model. Every registered task's parameters are
accepted as options too (the ones ``pusa-fw plan TASK`` takes, e.g. ``--strength 0.9``); an option that
is not a parameter of the chosen task is an error. Flags override the run file.

Example:
    ``pusa-fw generate --task i2v --image cat.png --prompt "a cat" --model Wan2.1-T2V-14B --lora pusa.pt:1.4``
    ``pusa-fw generate --task i2v --image cat.png --prompt "a cat" --model Wan2.2-TI2V-5B`` (its official
    defaults: 1280x704, 121 frames, 24 fps, 50 UniPC steps, cfg 5; the image held clean)
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import Any

from pusa_fw.cli_params import parse_option_text, option_name, task_parameters
from pusa_fw.errors import InputError
from pusa_fw.hookspecs import Register, hookimpl
from pusa_fw.plugins import get_registry

__all__ = ["GenerateCommand", "register_commands"]

_TASK_DEST = "task_param__"
_METAVARS = {
    "keyframe": "FRAME:PATH[:STRENGTH]", "lora": "PATH[:STRENGTH]", "prompt_at": "FRAME:TEXT",
    "model": "DIR", "out": "FILE.mp4", "config": "RUN.toml",
}
_NOT_FLAGS = ("task_params",)


def _add_config_flags(parser: argparse.ArgumentParser) -> set[str]:
    """One flag per `GenerateConfig` field (default suppressed: unset flags leave the run file's value)."""
    from pusa_fw_wan.cli.generate_config import FIELD_ALIASES, GenerateConfig

    taken = set()
    for name, info in GenerateConfig.model_fields.items():
        if name in _NOT_FLAGS:
            continue
        flag = option_name(name)
        default = info.get_default(call_default_factory=True)
        shown = "" if default in (None, [], {}) else f" (default: {default})"
        options: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS,
                                   "help": f"{info.description}{shown}"}
        annotation = info.annotation
        origin = typing.get_origin(annotation)
        if origin is list:
            options.update(action="append", metavar=_METAVARS.get(name, "VALUE"))
            options["help"] = f"{info.description} (repeatable)"
        elif annotation is bool or annotation == (bool | None):
            options.update(action=argparse.BooleanOptionalAction)
        elif origin is typing.Literal:
            options.update(choices=list(typing.get_args(annotation)))
        else:
            options.update(metavar=_METAVARS.get(name, name.upper()))
        aliases = [option_name(alias) for alias, field in FIELD_ALIASES.items() if field == name]
        parser.add_argument(flag, *aliases, **options)
        taken.update([flag, *aliases])
    return taken


def _add_task_flags(parser: argparse.ArgumentParser, taken: set[str]) -> None:
    """Every registered task's parameters as options (parsed later for the chosen task)."""
    group = parser.add_argument_group(
        "task parameters", "parameters of the chosen --task (see `pusa-fw tasks`; e.g. --strength 0.9)"
    )
    registry = get_registry()
    for task_name in registry.names("tasks"):
        for parameter in task_parameters(registry.entry("tasks", task_name).component):
            if parameter.option in taken:
                continue
            taken.add(parameter.option)
            group.add_argument(parameter.option, dest=_TASK_DEST + parameter.name, default=argparse.SUPPRESS,
                               metavar="VALUE", help=parameter.description or parameter.name)


def _task_values(task_name: str, given: dict[str, str], params: dict[str, Any]) -> dict[str, Any]:
    """Task parameters of the run file updated by the task options given on the command line."""
    if not given:
        return params
    from pusa_fw.registry_lookup import lookup

    parameters = {parameter.name: parameter for parameter in task_parameters(lookup("tasks", task_name))}
    for name, text in given.items():
        if name not in parameters:
            known = ", ".join(option_name(known) for known in parameters) or "none"
            raise InputError(
                f"{option_name(name)} is not a parameter of task {task_name!r}; its parameters: {known}"
            )
        params[name] = parse_option_text(parameters[name], text)
    return params


def config_from_args(args: argparse.Namespace) -> Any:
    """Merge ``--config`` (if any) with the flags given and validate them into a `GenerateConfig`."""
    from pusa_fw_wan.cli.generate_config import GenerateConfig, load_run_file, validate_config

    values: dict[str, Any] = {}
    run_file = getattr(args, "config", None)
    if run_file is not None:
        file_values, base = load_run_file(run_file)
        from_file = validate_config(file_values, Path(run_file).name).resolved_against(base)
        values = {key: getattr(from_file, key) for key in file_values}
    flags = {name: getattr(args, name) for name in GenerateConfig.model_fields if hasattr(args, name)}
    values.update(flags)
    given = {key[len(_TASK_DEST):]: value for key, value in vars(args).items() if key.startswith(_TASK_DEST)}
    task_name = values.get("task", GenerateConfig.model_fields["task"].default)
    values["task_params"] = _task_values(task_name, given, dict(values.get("task_params", {})))
    return validate_config(values, "option")


class GenerateCommand:
    """``pusa-fw generate``: run a task on a Wan model and write an mp4 plus a sidecar JSON."""

    name = "generate"
    help = ("generate a video with any registered task on a Wan2.1 T2V (Pusa LoRA via --lora) or Wan2.2 TI2V-5B "
            "model")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the `GenerateConfig` flags, ``--config`` and every task's parameters."""
        parser.description = (
            "Generate a video. Every flag is a GenerateConfig field; --config RUN.toml gives the same fields "
            "as TOML keys (task parameters in a [task] table with name = \"TASK\"); flags override it."
        )
        parser.add_argument("--config", metavar=_METAVARS["config"], type=Path, default=None,
                            help="TOML run file with GenerateConfig fields")
        taken = _add_config_flags(parser) | {"--config", "--help", "-h"}
        _add_task_flags(parser, taken)

    def run(self, args: argparse.Namespace) -> int:
        """Generate; print the written paths (and the time split with ``--profile``) on stdout."""
        from pusa_fw_wan.cli.generate_run import run_generate

        config = config_from_args(args)
        progress = sys.stderr.isatty() if config.progress is None else config.progress
        outcome = run_generate(config, progress=progress)
        if outcome.video_path is None:  # a torchrun rank other than 0: rank 0 writes and reports
            return 0
        sys.stdout.write(f"{outcome.video_path}\n{outcome.sidecar_path}\n")
        if config.profile:
            total = sum(outcome.timings.values())
            parts = ", ".join(f"{phase} {seconds:.2f} s" for phase, seconds in outcome.timings.items())
            sys.stdout.write(f"profile: {parts} (total {total:.2f} s)\n")
        return 0


@hookimpl
def register_commands(register: Register) -> None:
    """Register ``generate``, ``prepare`` and ``export-lora`` (``train`` is the ``pusa_fw_train`` plugin's)."""
    from pusa_fw_wan.cli.export_lora import ExportLoraCommand
    from pusa_fw_wan.cli.prepare import PrepareCommand

    register(GenerateCommand(), name="generate")
    register(PrepareCommand(), name="prepare")
    register(ExportLoraCommand(), name="export-lora")
