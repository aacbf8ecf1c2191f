"""Test backbones for plugin authors: one that knows the answer, one that knows nothing."""

from __future__ import annotations

from typing import Any

import torch

from ..backbone import Backbone
from ..flow import frame_view


class FrameTargets:
    """A window-aware context carrying clean latents `[B, C, N, H, W]` for the whole timeline.

    The sampling loop asks it for the window's frames, so `ExactVelocityBackbone` sees the targets of
    exactly the frames it is given.
    """

    def __init__(self, targets: torch.Tensor) -> None:
        self.targets = targets

    def for_frames(self, frames: torch.Tensor) -> torch.Tensor:
        return self.targets[:, :, frames.to(self.targets.device)]


class ExactVelocityBackbone(Backbone):
    """Returns the exact velocity towards the clean latents given as context.

    For a latent `x` at level sigma on a straight path to `x0`, the velocity is `(x - x0) / sigma`; at sigma
    0 it returns 0 (any value works: a step from sigma 0 has length 0). Every sampler over every valid plan
    must land exactly on `x0` with it, up to float32 rounding.

    The context is the clean latents of the window `[B, C, W, H, W']` (use `FrameTargets` for a timeline).
    Counts its calls in ``calls``.
    """

    def __init__(self) -> None:
        self.calls = 0

    def velocity(self, latents: torch.Tensor, sigmas: torch.Tensor, context: Any) -> torch.Tensor:
        self.calls += 1
        if not isinstance(context, torch.Tensor) or context.shape != latents.shape:
            raise TypeError("ExactVelocityBackbone needs the window's clean latents as context")
        s = frame_view(sigmas.to(latents.dtype))
        safe = torch.where(s > 0, s, torch.ones_like(s))
        return torch.where(s > 0, (latents - context) / safe, torch.zeros_like(latents))


class NullBackbone(Backbone):
    """Returns zeros without computing anything (one cached tensor): measures the sampler's own cost."""

    def __init__(self) -> None:
        self._zeros: torch.Tensor | None = None

    def velocity(self, latents: torch.Tensor, sigmas: torch.Tensor, context: Any) -> torch.Tensor:
        if self._zeros is None or self._zeros.shape != latents.shape or self._zeros.device != latents.device:
            self._zeros = torch.zeros_like(latents)
        return self._zeros


class ToyVelocityBackbone(Backbone):
    """A smooth nonlinear velocity `0.3 x + a(sigma) c + 0.1 tanh(x)` (the toy of the Wan sampler fixture).

    `context` is `c`, broadcastable to the latents. `a` is the per-frame sigma; override `level` to feed
    another function of sigma (e.g. Wan's int timesteps).
    """

    def level(self, sigmas: torch.Tensor) -> torch.Tensor:
        return sigmas

    def velocity(self, latents: torch.Tensor, sigmas: torch.Tensor, context: Any) -> torch.Tensor:
        a = frame_view(self.level(sigmas).to(latents.dtype))
        return 0.3 * latents + a * context + 0.1 * torch.tanh(latents)
