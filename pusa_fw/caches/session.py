"""Running a `StepCache` inside the sampling loop: one session per sample, one step view per step.

`CacheSession` holds the explicit state of one run: the cache's state, the backbone's partial-computation
memory per guidance branch, and the `WorkStats`. For each step the loop asks it for a `StepView`, a
`Backbone` that guidance calls as usual (``velocity`` per branch, ``velocities`` for the CFG pair); the
view numbers the branches in call order, asks the cache what to compute, runs the backbone (full,
partial, or not at all), records the work and hands back the cache's velocity of the whole window.

`CachedBackbone` binds a cache (and a `WorkStats`) to a backbone for callers that only pass a backbone on
(e.g. a pipeline's ``sample`` call): `pusa_fw.sample` unpacks it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..backbone import Backbone
from ..errors import PusaError
from .base import BranchCall, StepCache
from .work import WorkStats, dit_shape_of

__all__ = ["CacheSession", "CachedBackbone", "StepView", "resolve_cache"]


def resolve_cache(cache: StepCache | str | dict[str, Any] | None, params: dict[str, Any] | None = None) -> StepCache:
    """A cache object from an object, a registered name (+ `params`), a ``{"name": ...}`` dict, or None (none)."""
    if cache is None:
        cache = "none"
    if isinstance(cache, StepCache):
        if params:
            raise PusaError(f"cache params {sorted(params)} apply to a cache given by name; set them on the object")
        return cache
    from ..components import build

    built = build("caches", cache, params)
    if not isinstance(built, StepCache):
        raise PusaError(f"cache {cache!r} built a {type(built).__name__}, not a StepCache")
    return built


class CachedBackbone:
    """A backbone with a step cache attached; every other attribute is the backbone's.

    Example: ``pipeline.dit = CachedBackbone(dit, get_cache("teacache"), work=stats)``.
    """

    def __init__(self, backbone: Any, cache: StepCache | str, work: WorkStats | None = None) -> None:
        self.backbone = backbone
        self.cache = resolve_cache(cache)
        self.cache.check_backbone(backbone)
        self.work = work

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["backbone"], name)

    def velocity(self, latents: torch.Tensor, sigmas: torch.Tensor, context: Any) -> torch.Tensor:
        """The bare backbone's velocity (the cache applies only inside `pusa_fw.sample`)."""
        return self.backbone.velocity(latents, sigmas, context)

    __call__ = velocity


class CacheSession:
    """The explicit cache state of one sampling run.

    Args:
        cache: the cache.
        backbone: the backbone (checked against ``cache.needs_partial``).
        work: where to add the work done (a fresh `WorkStats` when None).
    """

    def __init__(self, cache: StepCache, backbone: Any, work: WorkStats | None = None) -> None:
        cache.check_backbone(backbone)
        self.cache = cache
        self.backbone = backbone
        self.work = work if work is not None else WorkStats()
        self.state: Any = cache.start()
        self.memories: dict[int, Any] = {}

    def view(self, step: int, frames: torch.Tensor, moving: torch.Tensor, remaining: torch.Tensor) -> StepView:
        """The `Backbone` guidance calls in `step` (window `frames` `[W]`, `moving` `[W]`, `remaining` `[W]`)."""
        return StepView(self, step, frames.cpu(), moving.cpu(), remaining.cpu())

    def decide(self, call: BranchCall) -> torch.Tensor:
        compute, self.state = self.cache.decide(self.state, call)
        compute = compute.to("cpu", torch.bool)
        if compute.shape != call.moving.shape:
            raise PusaError(f"cache {self.cache.name!r} returned a compute mask of shape {tuple(compute.shape)} "
                            f"for a window of {call.moving.numel()} frames")
        if not self.cache.needs_partial and bool(compute.any()) and not bool(compute.all()):
            raise PusaError(f"cache {self.cache.name!r} asked for some frames only but does not declare "
                            "needs_partial")
        return compute

    def run(self, call: BranchCall, context: Any, compute: torch.Tensor,
            computed: torch.Tensor | None = None) -> torch.Tensor:
        """Compute what `compute` asks (unless `computed` is given), record the work, return the cache's velocity."""
        count, window = int(compute.sum()), compute.numel()
        if computed is None and count:
            if self.cache.needs_partial:
                memory = self.memories.pop(call.branch, None)
                if count == window:  # a full call makes a fresh memory: drop the old one first, not beside it
                    memory = None
                computed, self.memories[call.branch] = self.backbone.velocity_partial(
                    call.latents, call.sigmas, context, compute=compute.to(call.latents.device), memory=memory)
            else:
                computed = self.backbone.velocity(call.latents, call.sigmas, context)
        shape = dit_shape_of(self.backbone, tuple(call.latents.shape))
        self.work.record(call.step, shape, int(call.latents.shape[0]), count, window)
        velocity, self.state = self.cache.supply(self.state, call, compute, computed if count else None)
        return velocity


class StepView(Backbone):
    """What guidance sees as the backbone during one step (see the module docstring)."""

    def __init__(self, session: CacheSession, step: int, frames: torch.Tensor, moving: torch.Tensor,
                 remaining: torch.Tensor) -> None:
        self.session = session
        self.step = step
        self.frames = frames
        self.moving = moving
        self.remaining = remaining
        self.branches = 0

    def _call(self, latents: torch.Tensor, sigmas: torch.Tensor) -> BranchCall:
        call = BranchCall(step=self.step, branch=self.branches, frames=self.frames, latents=latents,
                          sigmas=sigmas, moving=self.moving, remaining=self.remaining)
        self.branches += 1
        return call

    def velocity(self, latents: torch.Tensor, sigmas: torch.Tensor, context: Any) -> torch.Tensor:
        call = self._call(latents, sigmas)
        return self.session.run(call, context, self.session.decide(call))

    def velocities(self, latents: torch.Tensor, sigmas: torch.Tensor, contexts: Sequence[Any]) -> list[torch.Tensor]:
        """All branches decided first; when every one needs a full call, one ``velocities`` call (CFG parallel)."""
        calls = [self._call(latents, sigmas) for _ in contexts]
        masks = [self.session.decide(call) for call in calls]
        session = self.session
        if not session.cache.needs_partial and all(bool(mask.all()) for mask in masks):
            many = getattr(session.backbone, "velocities", None)
            outputs = (many(latents, sigmas, list(contexts)) if many is not None
                       else [session.backbone.velocity(latents, sigmas, context) for context in contexts])
            return [session.run(call, None, mask, computed)
                    for call, mask, computed in zip(calls, masks, outputs)]
        return [session.run(call, context, mask) for call, context, mask in zip(calls, contexts, masks)]
