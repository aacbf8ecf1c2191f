"""LCM: predict x0, then re-noise it to the next level with fresh, per-frame keyed noise.

The step LightX2V's 4-step Wan2.1 distill LoRA was trained and first run with (before its scheduler
switched to deterministic Euler): with ``x0 = x - sigma_from * v``,

    x_next = (1 - sigma_to) * x0 + sigma_to * eps,     eps ~ N(0, I) fresh at every step,

and a step to ``sigma_to == 0`` returns ``x0`` itself. Unlike Euler it forgets the sample's own noise
after every step (a consistency-model sampler): it suits a model distilled to predict x0 well from any
level in few steps.

Per frame: every frame uses its own levels, and its noise is keyed by ``(sample key, timeline frame,
update index)`` (`keyed_noise`), so a seed gives the same video whatever the window layout, and a frame
that does not move (``sigma_to == sigma_from``, e.g. a held frame) is returned bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..flow import frame_view
from ..plan import Plan
from .keyed_noise import KeyedNoiseRule, keyed_frame_noise

DEFAULT_NOISE_KEY = 0
"""The key a state has until the loop sets one (callers driving the rule by hand may keep it)."""


@dataclass
class LCMState:
    """Per-sample state of the LCM rule.

    Attributes:
        key: the sample's noise key (`keyed_noise.draw_noise_key`).
        updates: `[N]` int64 on the CPU, how many updates each timeline frame has had (its next draw
            index). Re-noising a held frame does not reset it, so the frame's later draws stay fresh.
    """

    key: int
    updates: torch.Tensor


def _timeline_indices(frames: torch.Tensor | slice, count: int) -> list[int]:
    if isinstance(frames, slice):
        return list(range(count))[frames]
    return [int(index) for index in frames.tolist()]


class LCM(KeyedNoiseRule):
    """x0 prediction re-noised to the next level with fresh, per-frame keyed noise (LightX2V's first step)."""

    name = "lcm"
    summary = "LCM: x0 re-noised with fresh keyed noise each step (LightX2V 4-step)"

    def start(self, plan: Plan, latents: torch.Tensor) -> LCMState:
        return LCMState(key=DEFAULT_NOISE_KEY, updates=torch.zeros(plan.num_latent_frames, dtype=torch.int64))

    def with_noise_key(self, state: LCMState, key: int) -> LCMState:
        state.key = int(key)
        return state

    def step(
        self,
        state: LCMState,
        frames: torch.Tensor | slice,
        latents: torch.Tensor,
        velocity: torch.Tensor,
        sigma_from: torch.Tensor,
        sigma_to: torch.Tensor,
        remaining: torch.Tensor,
    ) -> tuple[torch.Tensor, Any]:
        timeline = _timeline_indices(frames, state.updates.shape[0])
        moving = (sigma_to < sigma_from).cpu()
        renoised = moving & (sigma_to > 0).cpu()
        denoised = latents - frame_view(sigma_from.to(latents.dtype)) * velocity
        out = denoised
        if bool(renoised.any()):
            positions = renoised.nonzero().squeeze(1).tolist()
            batch, channels, _, height, width = latents.shape
            noise = keyed_frame_noise(
                state.key, [timeline[p] for p in positions],
                [int(state.updates[timeline[p]]) for p in positions],
                (batch, channels, height, width), device=latents.device, dtype=latents.dtype,
            )
            where = torch.tensor(positions, device=latents.device)
            level = frame_view(sigma_to[where].to(latents.dtype))
            out = denoised.clone()
            out[:, :, where] = (1 - level) * denoised[:, :, where] + level * noise
        out = torch.where(frame_view(moving.to(latents.device)), out, latents)
        moved = [timeline[p] for p in moving.nonzero().squeeze(1).tolist()]
        if moved:
            state.updates[moved] += 1
        return out, state
