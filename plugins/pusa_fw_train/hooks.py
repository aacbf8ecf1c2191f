"""Plugin hooks of ``pusa_fw_train``: the ``train`` command.

Nothing heavy is imported here; the trainer imports torch and its modules when a command runs.
"""

from __future__ import annotations

from pusa_fw.hookspecs import Register, hookimpl

from pusa_fw_train.cli import TrainCommand

__all__ = ["register_commands"]


@hookimpl
def register_commands(register: Register) -> None:
    """Register ``train``."""
    register(TrainCommand(), name="train")
