"""Replacement conditioning as a conditioning policy (no special case in the sampler).

The held frame keeps its clean source as its state (sigma 0 throughout, so the output frame is the
source bit for bit), but is *shown* to the model at the level the generated frames have in that step,
as a freshly noised copy of the source (new noise every step). This is the classic "replacement" way of
conditioning a model trained with one sigma per video: every frame the model sees sits at the same level,
and the given content is overwritten into the noisy state each step.
"""

from __future__ import annotations

import torch

from pusa_fw.policy import ConditioningPolicy, FramePath

__all__ = ["Replacement"]


class Replacement(ConditioningPolicy):
    """Shown at the base level with fresh noise every step; the clean source stays the state."""

    name = "replace"
    summary = "replacement: shown re-noised to the generated frames' level every step, clean state kept"

    def path(self, base: torch.Tensor) -> FramePath:
        return FramePath(torch.zeros_like(base), base[:-1].clone())

    @classmethod
    def from_strength(cls, strength: float, **params: object) -> Replacement:
        """Replacement has no strength and no parameters; any strength gives the same policy."""
        return cls(**params)
