"""`framecache`: per-frame step caching (FlowCache-style) for per-frame-timestep models.

Per guidance branch, every frame of the window keeps its own accumulator of the relative change of its
model input (`pusa_fw.caches.base.relative_change`). In each step:

- frames that do not move (held frames, finished frames, frames not yet started) are never computed:
  their output is never used. They still take part in self-attention through the keys and values the
  backbone cached at their last computation (`pusa_fw.backbone.PartialBackbone`);
- a moving frame is computed when its accumulator reaches its threshold: ``threshold`` for noisy frames,
  ``clean_threshold`` for near-clean ones (input level below ``clean_below``; FlowCache's finding is that
  near-clean chunks change the most from step to step, so they get their own, stricter accounting); when
  it has been reused ``max_skips`` steps in a row (a refresh at least every ``max_skips + 1`` steps); and
  on its last update when ``final_update`` is on;
- frames are decided in chunks of ``chunk`` latent frames: a chunk with one due frame computes all its
  moving frames;
- the other moving frames reuse their velocity from their last computation; if no frame is due, the whole
  step reuses (no backbone call).

The first call of a window (and every call after the window changes) computes everything and starts a fresh
backbone memory. The computed frames go through ``velocity_partial`` with ``compute`` = the due frames, so
the work saved is real: skipped frames' tokens go through no block. It needs a partial backbone and
refuses others in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import Field

from .base import BranchCall, StepCache, relative_change

__all__ = ["FrameCache"]


@dataclass
class _FrameBranch:
    """One branch's per-frame state (all `[W]` over the window's frames)."""

    window: tuple[int, ...]
    latents: torch.Tensor
    sigmas: torch.Tensor
    velocity: torch.Tensor | None = None
    accumulated: torch.Tensor | None = None
    skips: torch.Tensor | None = None


class FrameCache(StepCache):
    """Per-frame step cache: each frame is recomputed when its own input has changed enough."""

    name: ClassVar[str] = "framecache"
    summary: ClassVar[str] = "per frame: compute only moving frames whose own input changed enough (partial backbone)"
    needs_partial: ClassVar[bool] = True

    threshold: float = Field(0.3, ge=0, description="accumulated change that recomputes a noisy frame")
    clean_threshold: float = Field(0.15, ge=0, description="the same for near-clean frames")
    clean_below: float = Field(0.3, ge=0, le=1, description="input level under which a frame is near-clean")
    max_skips: int = Field(2, ge=0, description="most consecutive reuses of a moving frame (0: never reuse)")
    final_update: bool = Field(True, description="always compute a frame's last update")
    chunk: int = Field(1, ge=1, description="latent frames decided together")
    sigma_floor: float = Field(0.05, gt=0, description="added to the level in the level-change term")

    def _chunked(self, due: torch.Tensor) -> torch.Tensor:
        if self.chunk == 1:
            return due
        groups = torch.arange(due.numel()) // self.chunk
        hit = torch.zeros(int(groups[-1]) + 1, dtype=torch.bool).index_put_((groups,), due, accumulate=True)
        return hit[groups]

    def decide(self, state: dict[int, _FrameBranch], call: BranchCall) -> tuple[torch.Tensor, Any]:
        branch = state.get(call.branch)
        width = call.moving.numel()
        if (branch is None or branch.window != call.window_key or branch.velocity is None
                or branch.latents.shape != call.latents.shape):
            state[call.branch] = _FrameBranch(call.window_key, call.latents.clone(), call.sigmas.clone(),
                                              accumulated=torch.zeros(width, dtype=torch.float64),
                                              skips=torch.zeros(width, dtype=torch.int64))
            return torch.ones(width, dtype=torch.bool), state
        assert branch.accumulated is not None and branch.skips is not None
        change, _ = relative_change(branch.latents, call.latents, branch.sigmas, call.sigmas, self.sigma_floor)
        branch.accumulated = branch.accumulated + change
        branch.latents, branch.sigmas = call.latents.clone(), call.sigmas.clone()
        level = call.sigmas.detach().to("cpu", torch.float64).amax(dim=0)
        limit = torch.where(level < self.clean_below, torch.tensor(self.clean_threshold, dtype=torch.float64),
                            torch.tensor(self.threshold, dtype=torch.float64))
        due = (branch.accumulated >= limit) | (branch.skips >= self.max_skips)
        if self.final_update:
            due |= call.remaining == 1
        compute = self._chunked(due & call.moving) & call.moving
        return compute, state

    def supply(self, state: dict[int, _FrameBranch], call: BranchCall, compute: torch.Tensor,
               computed: torch.Tensor | None) -> tuple[torch.Tensor, Any]:
        branch = state[call.branch]
        assert branch.accumulated is not None and branch.skips is not None
        if computed is not None:
            if bool(compute.all()) or branch.velocity is None:
                branch.velocity = computed.clone()
            else:  # a new tensor: the previous step's velocity may still be referenced downstream
                branch.velocity = branch.velocity.clone()
                branch.velocity[:, :, compute.to(branch.velocity.device)] = computed
        reused = call.moving & ~compute
        branch.skips = torch.where(compute, torch.zeros_like(branch.skips), branch.skips + reused.long())
        branch.accumulated = torch.where(compute, torch.zeros_like(branch.accumulated), branch.accumulated)
        assert branch.velocity is not None
        return branch.velocity, state
