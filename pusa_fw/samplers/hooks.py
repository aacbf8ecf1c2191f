"""The core's own plugin: registers the samplers that live in `pusa_fw` (Euler, per-frame UniPC, LCM).

`pusa_fw.plugins.make_plugin_manager` always registers it (as plugin ``core``, not subject to
``PUSA_FW_DISABLE_PLUGINS`` or ``PUSA_FW_LOAD_PLUGINS``), so `pusa_fw.sample` finds its default sampler with
every other plugin switched off.
"""

from __future__ import annotations

from ..hookspecs import Register, hookimpl
from .euler import Euler
from .lcm import LCM
from .unipc import UniPC

CORE_PLUGIN_NAME = "core"


@hookimpl
def register_samplers(register: Register) -> None:
    """Register ``euler``, ``unipc`` and ``lcm``."""
    register(Euler())
    register(UniPC())
    register(LCM())
