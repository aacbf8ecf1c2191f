"""pusa-fw-example-plugin: a linear sigma grid (`LinearGrid`) and a task on it (`LinearTextToVideo`)."""

from __future__ import annotations

from .linear import LinearGrid, LinearTextToVideo

__all__ = ["LinearGrid", "LinearTextToVideo"]
