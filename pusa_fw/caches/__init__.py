"""Step caches: per step and guidance branch, which frames the backbone computes and what is reused.

- `base`: `StepCache`, `BranchCall`, the change indicator.
- `teacache`: `NoCache` (``none``), `TeaCache` (``teacache``, global).
- `framecache`: `FrameCache` (``framecache``, per frame, needs a partial backbone).
- `session`: how the sampling loop runs a cache (`CacheSession`, `CachedBackbone`).
- `work`: `WorkStats`, the DiT work done (token-block evaluations, FLOPs) against no cache.
"""

from .base import BranchCall, StepCache
from .framecache import FrameCache
from .session import CachedBackbone, CacheSession, resolve_cache
from .teacache import NoCache, TeaCache
from .work import DiTShape, WorkStats

__all__ = ["BranchCall", "CacheSession", "CachedBackbone", "DiTShape", "FrameCache", "NoCache", "StepCache",
           "TeaCache", "WorkStats", "resolve_cache"]
