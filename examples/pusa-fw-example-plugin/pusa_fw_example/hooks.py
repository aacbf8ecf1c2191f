"""The plugin's hooks: pusa-fw imports this module through the ``pusa_fw`` entry point and calls each
hook once, at load time, with a ``register`` callback."""

from __future__ import annotations

from pusa_fw import hookimpl
from pusa_fw.hookspecs import Register

from .linear import LinearGrid, LinearTextToVideo


@hookimpl
def register_schedules(register: Register) -> None:
    """Register the ``linear`` grid (also reachable as ``linear-grid``)."""
    register(LinearGrid, aliases=("linear-grid",))


@hookimpl
def register_tasks(register: Register) -> None:
    """Register the ``linear-t2v`` task."""
    register(LinearTextToVideo)
