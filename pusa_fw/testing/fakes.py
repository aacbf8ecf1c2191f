"""Test backbones for plugin authors: one that knows the answer, one that knows nothing, one that computes
some frames only (`PartialToyBackbone`, the partial-computation capability)."""

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


class PartialToyBackbone(Backbone):
    """A toy velocity with cross-frame coupling and real partial computation (`PartialBackbone`).

    ``v_f = 0.3 x_f + sigma_f c + 0.1 tanh(x_f) + coupling * mean_j k_j`` with per-frame "keys"
    ``k_j = sigma_j tanh(x_j)`` (a frame's key is computed from its own input only, as a block's keys are
    from its own tokens). `velocity_partial` computes keys and outputs of the ``compute`` frames only and
    takes the other frames' keys from the memory of the previous call, like a DiT that caches keys and
    values of skipped frames. With nothing changed since the memory was made, a partial call's outputs
    equal the full call's bit for bit.

    ``config`` gives the work estimate a shape (`pusa_fw.caches.work.dit_shape_of`); ``frames_computed``
    logs the frame count of every call and ``compute_log`` every partial call's mask.
    """

    def __init__(self, coupling: float = 0.2, blocks: int = 2) -> None:
        from types import SimpleNamespace

        self.coupling = coupling
        self.config = SimpleNamespace(num_layers=blocks, dim=8, ffn_dim=32, text_len=0, patch_size=(1, 1, 1))
        self.frames_computed: list[int] = []
        self.compute_log: list[torch.Tensor] = []

    def _keys(self, latents: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        return frame_view(sigmas.to(latents.dtype)) * torch.tanh(latents)

    def _out(self, latents: torch.Tensor, sigmas: torch.Tensor, context: Any, keys: torch.Tensor) -> torch.Tensor:
        s = frame_view(sigmas.to(latents.dtype))
        c = 0.0 if context is None else context
        return 0.3 * latents + s * c + 0.1 * torch.tanh(latents) + self.coupling * keys.mean(dim=2, keepdim=True)

    def velocity(self, latents: torch.Tensor, sigmas: torch.Tensor, context: Any) -> torch.Tensor:
        self.frames_computed.append(latents.shape[2])
        return self._out(latents, sigmas, context, self._keys(latents, sigmas))

    def velocity_partial(self, latents: torch.Tensor, sigmas: torch.Tensor, context: Any, *,
                         compute: torch.Tensor, memory: Any | None) -> tuple[torch.Tensor, Any]:
        from ..errors import InputError

        compute = compute.to(latents.device, torch.bool)
        if compute.dim() != 1 or compute.numel() != latents.shape[2] or not bool(compute.any()):
            raise InputError(f"compute must be [F={latents.shape[2]}] bool with at least one True, "
                             f"got shape {tuple(compute.shape)}")
        if memory is None and not bool(compute.all()):
            raise InputError("memory is None (nothing cached yet) but compute is not all True; compute every "
                             "frame in the first call")
        self.frames_computed.append(int(compute.sum()))
        self.compute_log.append(compute.cpu().clone())
        fresh = self._keys(latents[:, :, compute], sigmas[:, compute])
        if memory is None:
            keys = fresh
        else:
            keys = memory.clone()
            keys[:, :, compute] = fresh
        out = self._out(latents[:, :, compute], sigmas[:, compute], context, keys)
        return out, keys
