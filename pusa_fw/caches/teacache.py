"""`none` and `teacache`: no caching, and the global step cache users know.

`teacache` keeps, per guidance branch, one accumulator of the relative change of the model input over the
whole window (`pusa_fw.caches.base.relative_change`, pooled over frames by their L1 mass: a proxy for
TeaCache's relative L1 of the timestep-modulated input, computed without the backbone's help, with no
per-model polynomial rescale). While the accumulated change stays below ``threshold`` the step reuses the
branch's last velocity for every frame; otherwise the whole window is computed and the accumulator
restarts. The first ``warmup`` calls of a window and the window's last step (every moving frame on its
last update) are always computed. It works on any backbone.

With per-frame levels the indicator is blunt by construction: held frames add no change and dilute it,
and frames at different levels change at different rates. That is the baseline `framecache` improves on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import Field

from .base import BranchCall, StepCache, relative_change

__all__ = ["NoCache", "TeaCache"]


class NoCache(StepCache):
    """Every branch of every step computes the whole window (the default; identical to no cache)."""

    name: ClassVar[str] = "none"
    summary: ClassVar[str] = "no caching: every step computes every frame of the window"

    def decide(self, state: Any, call: BranchCall) -> tuple[torch.Tensor, Any]:
        return torch.ones_like(call.moving), state

    def supply(self, state: Any, call: BranchCall, compute: torch.Tensor,
               computed: torch.Tensor | None) -> tuple[torch.Tensor, Any]:
        assert computed is not None
        return computed, state


@dataclass
class _TeaBranch:
    """One branch's TeaCache state."""

    window: tuple[int, ...]
    latents: torch.Tensor
    sigmas: torch.Tensor
    velocity: torch.Tensor | None = None
    accumulated: float = 0.0
    calls: int = 0
    skips: int = 0


class TeaCache(StepCache):
    """Global step cache (TeaCache-style): skip a whole step while the input has changed little."""

    name: ClassVar[str] = "teacache"
    summary: ClassVar[str] = "global: reuse the last velocity while the accumulated input change < threshold"

    threshold: float = Field(0.15, ge=0, description="accumulated relative change that forces a computation")
    warmup: int = Field(1, ge=1, description="calls per window always computed at its start")
    max_skips: int = Field(0, ge=0, description="most consecutive reused steps (0: unlimited)")
    sigma_floor: float = Field(0.05, gt=0, description="added to the level in the level-change term")

    def decide(self, state: dict[int, _TeaBranch], call: BranchCall) -> tuple[torch.Tensor, Any]:
        branch = state.get(call.branch)
        everything = torch.ones_like(call.moving)
        if (branch is None or branch.window != call.window_key or branch.velocity is None
                or branch.latents.shape != call.latents.shape):
            state[call.branch] = _TeaBranch(call.window_key, call.latents.clone(), call.sigmas.clone())
            return everything, state
        change, weight = relative_change(branch.latents, call.latents, branch.sigmas, call.sigmas,
                                         self.sigma_floor)
        branch.accumulated += float((change * weight).sum() / weight.sum().clamp_min(1e-12))
        branch.latents, branch.sigmas = call.latents.clone(), call.sigmas.clone()
        last = bool(call.moving.any()) and int(call.remaining[call.moving].max()) == 1
        forced = branch.calls < self.warmup or last or (self.max_skips > 0 and branch.skips >= self.max_skips)
        if forced or branch.accumulated >= self.threshold:
            return everything, state
        branch.skips += 1
        return torch.zeros_like(call.moving), state

    def supply(self, state: dict[int, _TeaBranch], call: BranchCall, compute: torch.Tensor,
               computed: torch.Tensor | None) -> tuple[torch.Tensor, Any]:
        branch = state[call.branch]
        branch.calls += 1
        if computed is not None:
            branch.velocity, branch.accumulated, branch.skips = computed, 0.0, 0
        assert branch.velocity is not None
        return branch.velocity, state
