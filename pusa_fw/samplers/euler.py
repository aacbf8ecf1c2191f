"""Euler: `x <- x + (sigma_to - sigma_from) * v`, per frame (Pusa's sampler)."""

from __future__ import annotations

from typing import Any

import torch

from ..flow import frame_view
from .base import SamplerRule


class Euler(SamplerRule):
    """First-order flow-matching Euler step with one step size per frame."""

    name = "euler"
    summary = "first-order Euler (Pusa's sampler)"

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
        step = frame_view((sigma_to - sigma_from).to(latents.dtype))
        return latents.addcmul_(velocity, step), state
