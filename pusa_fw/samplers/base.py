"""`SamplerRule`: the update a sampler applies to the frames of one window in one step.

The loop in `pusa_fw.sampling` owns the plan walk, guidance and re-noising; a rule only turns
(latents, velocity, per-frame sigma from/to) into new latents. Everything a rule needs is passed in:
the step index, the timeline indices of the window's frames and how many updates each frame has left in
its current run. Multistep state (UniPC's history) is an explicit value handed back and forth, never
hidden in the rule object, so one rule instance can serve many samples.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from ..plan import Plan


class SamplerRule(ABC):
    """A per-frame update rule (Euler, UniPC, ...). Register instances through ``register_samplers``."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""

    def start(self, plan: Plan, latents: torch.Tensor) -> Any:
        """Initial solver state for `latents` `[B, C, N, H, W]` on the timeline of `plan` (None if stateless)."""
        return None

    @abstractmethod
    def step(
        self,
        state: Any,
        frames: torch.Tensor | slice,
        latents: torch.Tensor,
        velocity: torch.Tensor,
        sigma_from: torch.Tensor,
        sigma_to: torch.Tensor,
        remaining: torch.Tensor,
    ) -> tuple[torch.Tensor, Any]:
        """Advance the window's frames from `sigma_from` to `sigma_to`.

        Args:
            state: the solver state from `start` or the previous `step`.
            frames: the window's timeline indices (`[W]` int64) or slice, to address per-frame state.
            latents: `[B, C, W, H, W']` window latents at `sigma_from`.
            velocity: `[B, C, W, H, W']` (guided) velocity at `sigma_from`.
            sigma_from: `[W]` float64 current levels from the plan (on the latents' device).
            sigma_to: `[W]` float64 target levels; frames with `sigma_to == sigma_from` must stay unchanged.
            remaining: `[W]` int64 updates each frame has left in its run, this one included.

        Returns:
            New window latents `[B, C, W, H, W']` and the new state. A rule may update `latents` in place
            and return it; the caller restores frames that do not move, so they stay bit-exact.
        """

    def forget(self, state: Any, frames: torch.Tensor) -> Any:
        """Drop the history of `frames` (`[N]` bool) after they were re-noised. Stateless rules ignore it."""
        return state
