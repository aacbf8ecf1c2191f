"""pusa-fw: composable per-frame (vectorized) timestep schedules for video diffusion."""

from __future__ import annotations

from .backbone import Backbone
from .errors import PusaError
from .hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["Backbone", "PusaError", "hookimpl", "__version__"]
