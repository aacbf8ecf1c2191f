"""Plugin hooks of ``pusa_fw_toy``: the replacement policy, the toy model format, the ``toy-world`` training
source and the ``toy-init`` / ``toy-pack`` / ``eval-toy`` commands.

Nothing heavy is imported here; the commands import torch and the models when they run.
"""

from __future__ import annotations

from typing import Any

from pusa_fw.hookspecs import Register, hookimpl

from pusa_fw_toy.cli import EvalToyCommand, ToyInitCommand, ToyPackCommand
from pusa_fw_toy.model_format import ToyModelFormat
from pusa_fw_toy.policies import Replacement

__all__ = [
    "register_commands", "register_conditioning_policies", "register_model_formats", "register_training_sources",
]


@hookimpl
def register_conditioning_policies(register: Register) -> None:
    """Register ``replace`` (replacement conditioning)."""
    register(Replacement)


@hookimpl
def register_commands(register: Register) -> None:
    """Register ``toy-init``, ``toy-pack`` and ``eval-toy``."""
    register(ToyInitCommand(), name="toy-init")
    register(ToyPackCommand(), name="toy-pack")
    register(EvalToyCommand(), name="eval-toy")


@hookimpl
def register_model_formats(register: Register) -> None:
    """Register the toy model format (directories with a ``toy.json``)."""
    register(ToyModelFormat())


@hookimpl
def register_training_sources(register: Register) -> None:
    """Register ``toy-world`` (toy-world clips rendered and encoded on the fly)."""
    register(_open_world, name="toy-world")


def _open_world(**options: Any) -> Any:
    """`pusa_fw_toy.source.open_world`, imported when a run opens it (options: model_dir, length,
    seed_offset, caption_dropout)."""
    from pusa_fw_toy.source import open_world

    return open_world(**options)
