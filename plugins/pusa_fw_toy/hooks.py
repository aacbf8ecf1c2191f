"""Plugin hooks of ``pusa_fw_toy``: the replacement policy and the ``toy-init`` / ``toy-pack`` / ``eval-toy`` commands.

Nothing heavy is imported here; the commands import torch and the models when they run.
"""

from __future__ import annotations

from pusa_fw.hookspecs import Register, hookimpl

from pusa_fw_toy.cli import EvalToyCommand, ToyInitCommand, ToyPackCommand
from pusa_fw_toy.policies import Replacement

__all__ = ["register_commands", "register_conditioning_policies"]


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
