"""Command-line options generated from a task's pydantic parameters, and one-line error messages.

Each field of a `Task` model becomes one ``--field-name VALUE`` option (dashes for underscores).
List, tuple and set fields take comma-separated values (``--positions 0,40,80``), bool fields take
``true``/``false``, dict and nested-model fields take JSON, a component field (``--policy``, ``--schedule``)
takes a registered name or a JSON table ``{"name": ..., ...}``; everything else is handed to pydantic as
the string typed, and pydantic does the converting and the validating, so a bad value gives an
`InputError` naming the option.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from .errors import InputError, PluginError

PLAN_OPTIONS: tuple[str, ...] = ("num_frames", "num_steps", "steps", "shift", "png", "json", "help")
"""Destinations used by the ``plan`` command itself; a task field may not take one of these names."""

_LIST_ORIGINS = (list, tuple, set, frozenset)


@dataclass(frozen=True)
class TaskParameter:
    """One task parameter as the CLI shows and parses it.

    Attributes:
        name: The pydantic field name (``noise_multiplier``).
        option: The command-line option (``--noise-multiplier``).
        type_label: The annotation, readable (``tuple[int, ...]``).
        value_kind: How the option's text is parsed: ``"list"``, ``"bool"``, ``"json"`` or ``"text"``.
        required: Whether the field has no default.
        default: The default, JSON-able (None when required).
        description: The field's description ("" if none).
    """

    name: str
    option: str
    type_label: str
    value_kind: str
    required: bool
    default: Any
    description: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (for ``pusa-fw tasks --json``)."""
        return {
            "name": self.name,
            "option": self.option,
            "type": self.type_label,
            "required": self.required,
            "default": self.default,
            "description": self.description,
        }


def option_name(field_name: str) -> str:
    """``noise_multiplier`` -> ``--noise-multiplier``."""
    return "--" + field_name.replace("_", "-")


def _type_label(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return repr(annotation).replace("typing.", "").replace("NoneType", "None")


def _non_none_members(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return [member for member in typing.get_args(annotation) if member is not type(None)]
    return [annotation]


def _value_kind(annotation: Any) -> str:
    members = _non_none_members(annotation)
    if str in members and any(_is_model(typing.get_args(m)[0] if typing.get_args(m) else m) for m in members):
        return "spec"
    if len(members) != 1:
        return "text"
    member = members[0]
    origin = typing.get_origin(member)
    if origin in _LIST_ORIGINS or member in _LIST_ORIGINS:
        return "list"
    if member is bool:
        return "bool"
    if origin is dict or member is dict or (isinstance(member, type) and issubclass(member, BaseModel)):
        return "json"
    return "text"


def _is_model(member: Any) -> bool:
    return isinstance(member, type) and issubclass(member, BaseModel)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except TypeError:
        return list(value) if isinstance(value, (tuple, set, frozenset)) else repr(value)
    return value


def task_parameters(task_cls: type[BaseModel]) -> list[TaskParameter]:
    """The parameters of a task class, in field order.

    Raises:
        PluginError: A field name clashes with an option of the ``plan`` command itself.
    """
    parameters = []
    if not (isinstance(task_cls, type) and issubclass(task_cls, BaseModel)):
        raise PluginError(
            f"task {getattr(task_cls, 'name', task_cls)!r} is not a pydantic model class; register a "
            "subclass of pusa_fw.task.Task (its fields are the task's parameters)"
        )
    fields: dict[str, FieldInfo] = task_cls.model_fields
    for name, info in fields.items():
        if name in PLAN_OPTIONS:
            task_name = getattr(task_cls, "name", task_cls.__name__)
            raise PluginError(
                f"task {task_name!r} has a parameter {name!r} that clashes with the plan option "
                f"{option_name(name)}; rename the field (reserved: {', '.join(PLAN_OPTIONS)})"
            )
        required = info.is_required()
        default = None if required else _jsonable(info.get_default(call_default_factory=True))
        parameters.append(
            TaskParameter(
                name=name,
                option=option_name(name),
                type_label=_type_label(info.annotation),
                value_kind=_value_kind(info.annotation),
                required=required,
                default=default,
                description=info.description or "",
            )
        )
    return parameters


_METAVARS = {"list": "V1,V2,...", "bool": "{true,false}", "json": "JSON", "text": "VALUE", "spec": "NAME|JSON"}


def add_task_options(parser: argparse.ArgumentParser, task_cls: type[BaseModel]) -> list[TaskParameter]:
    """Add one option per task parameter to ``parser`` (unset options keep the model's default).

    Returns:
        The parameters that were added.
    """
    parameters = task_parameters(task_cls)
    group = parser.add_argument_group(f"parameters of task {getattr(task_cls, 'name', task_cls.__name__)!r}")
    for parameter in parameters:
        default_text = "required" if parameter.required else f"default: {json.dumps(parameter.default)}"
        group.add_argument(
            parameter.option,
            dest=parameter.name,
            metavar=_METAVARS[parameter.value_kind],
            default=argparse.SUPPRESS,
            required=parameter.required,
            help=f"{parameter.description} ({parameter.type_label}; {default_text})".strip(),
        )
    return parameters


def parse_option_text(parameter: TaskParameter, text: str) -> Any:
    """Turn one option's text into the raw value pydantic validates (lists split on commas, JSON dicts)."""
    if parameter.value_kind == "list":
        return [] if not text.strip() else [item.strip() for item in text.split(",")]
    if parameter.value_kind == "bool":
        lowered = text.strip().lower()
        if lowered not in ("true", "false"):
            raise InputError(f"{parameter.option} takes true or false, got {text!r}")
        return lowered == "true"
    if parameter.value_kind == "spec" and not text.lstrip().startswith("{"):
        return text
    if parameter.value_kind in ("json", "spec"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{parameter.option} takes JSON, got {text!r} ({exc.msg})") from exc
    return text


def task_from_options(task_cls: type[BaseModel], namespace: argparse.Namespace) -> BaseModel:
    """Build and validate a task from the options `add_task_options` parsed.

    Raises:
        InputError: A value is malformed or fails validation; the message names the option.
    """
    values = {
        parameter.name: parse_option_text(parameter, getattr(namespace, parameter.name))
        for parameter in task_parameters(task_cls)
        if hasattr(namespace, parameter.name)
    }
    try:
        return task_cls.model_validate(values)
    except ValidationError as exc:
        task_name = getattr(task_cls, "name", task_cls.__name__)
        raise InputError(f"task {task_name!r}: {one_line_validation_error(exc, as_options=True)}") from exc


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line_validation_error(error: ValidationError, *, as_options: bool = False) -> str:
    """A pydantic error as one line: ``field: message (got value)`` per problem, joined by ``; ``.

    Args:
        error: The pydantic error.
        as_options: Name fields as command-line options (``--field-name``) instead of field names.
    """
    parts = []
    for problem in error.errors():
        location = [str(item) for item in problem.get("loc", ())]
        if location and as_options:
            location[0] = option_name(location[0])
        where = location[0] + "".join(f"[{item}]" for item in location[1:]) if location else error.title
        shows_input = "input" in problem and problem["type"] != "missing"
        got = f" (got {_short_repr(problem['input'])})" if shows_input else ""
        parts.append(f"{where}: {problem['msg']}{got}")
    return "; ".join(parts)
