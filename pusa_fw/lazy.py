"""Lazy package exports: a name is imported from its module on first attribute access (PEP 562).

Packages whose public names live in heavy modules (torch models, PyAV, transformers) use this so that
``import package`` stays cheap and works without the optional dependencies.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """Build a package's module-level ``__getattr__`` and ``__all__`` from a name -> module table.

    Args:
        package: the package's ``__name__`` (relative module paths resolve against it).
        exports: public name -> module that defines it, e.g. ``{"WanDiT": ".dit.model"}``.

    Returns:
        ``(__getattr__, __all__)``; assign both at the package's top level.
    """
    table = dict(exports)

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module, package), name)

    return __getattr__, sorted(table)
