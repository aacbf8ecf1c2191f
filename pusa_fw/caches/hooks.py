"""The core's caches: ``none``, ``teacache`` and ``framecache``, registered by the core's own plugin.

`pusa_fw.plugins.core_plugin` joins this hook with the core samplers' into plugin ``core``, which is always
registered, so the default cache is there with every other plugin switched off.
"""

from __future__ import annotations

from ..hookspecs import Register, hookimpl
from .framecache import FrameCache
from .teacache import NoCache, TeaCache


@hookimpl
def register_caches(register: Register) -> None:
    """Register ``none``, ``teacache`` and ``framecache`` (classes: `pusa_fw.get_cache` builds them)."""
    register(NoCache)
    register(TeaCache)
    register(FrameCache)
