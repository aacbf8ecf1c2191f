"""Look up a registered component by kind and name (loads plugins on first use)."""

from __future__ import annotations

from typing import Any


def lookup(kind: str, name: str) -> Any:
    """Return the component registered as `name` under `kind` (e.g. ``"schedules"``, ``"tasks"``).

    Raises:
        UnknownComponentError: nothing of that kind is registered under `name`; the message lists the names.
    """
    from .plugins import get_registry

    return get_registry().get(kind, name)
