"""UniPC (bh2, order 2, x0-prediction) generalised to one sigma sequence per frame.

Wan's default solver keeps, per sample, the x0 predictions of the last two steps, corrects the incoming
sample with the new prediction (UniC) and then predicts the next one (UniP). Here every frame keeps its
own history, because on a staircase or rolling plan the frames walk their sequences at different rows:
a frame's corrector and predictor use *its* previous levels. With all frames sharing one sequence this is
exactly the scalar solver (the predictor order is `min(2, updates so far + 1, updates left)`; the corrector
uses the order chosen at the frame's previous update). Coefficients are computed in float32 from the plan's
float32 sigmas, as the official scheduler does.

In the flow parameterisation `alpha = 1 - sigma`, `lambda = log(alpha) - log(sigma)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..flow import frame_view
from ..plan import Plan
from .base import SamplerRule


def _lam(sigma: torch.Tensor) -> torch.Tensor:
    return torch.log(1 - sigma) - torch.log(sigma)


@dataclass
class UniPCState:
    """Per-frame solver history over the timeline (tensors `[B, C, N, H, W]` and `[N]`).

    Attributes:
        denoised: x0 prediction of each frame's latest update.
        denoised_prev: x0 prediction of the update before it.
        last_sample: the (corrected) sample each frame's latest prediction started from.
        sigma: level of the latest update's start.
        sigma_prev: level of the update before it.
        count: updates in the current run, capped at 2 (0 = no history).
        order: predictor order used at the latest update (the next corrector uses it).
    """

    denoised: torch.Tensor
    denoised_prev: torch.Tensor
    last_sample: torch.Tensor
    sigma: torch.Tensor
    sigma_prev: torch.Tensor
    count: torch.Tensor
    order: torch.Tensor


def _coefficients(sigma_s: torch.Tensor, sigma_t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """h, hh = -h, expm1(hh) (used as both h_phi_1 and bh2's B_h) and alpha_t for a step s -> t."""
    h = _lam(sigma_t) - _lam(sigma_s)
    hh = -h
    phi = torch.expm1(hh)
    return h, hh, phi, 1 - sigma_t


def predict(
    x: torch.Tensor,
    m0: torch.Tensor,
    m1: torch.Tensor,
    sigma_s: torch.Tensor,
    sigma_prev: torch.Tensor,
    sigma_t: torch.Tensor,
    second_order: torch.Tensor,
) -> torch.Tensor:
    """UniP-bh2 from `sigma_s` to `sigma_t` (all sigma arguments `[W]`; latents `[B, C, W, H, W']`).

    Args:
        x: samples at `sigma_s`.
        m0: x0 predictions at `sigma_s`.
        m1: x0 predictions at `sigma_prev` (read only where `second_order`).
        second_order: `[W]` bool, frames that take the order-2 step.
    """
    h, _, phi, alpha_t = _coefficients(sigma_s, sigma_t)
    base = frame_view(sigma_t / sigma_s) * x - frame_view(alpha_t * phi) * m0
    if not bool(second_order.any()):
        return base
    rk = (_lam(sigma_prev) - _lam(sigma_s)) / h
    d1 = (m1 - m0) / frame_view(rk)
    second = base - frame_view(alpha_t * phi) * (0.5 * d1)
    return torch.where(frame_view(second_order), second, base)


def correct(
    x_last: torch.Tensor,
    x: torch.Tensor,
    m0: torch.Tensor,
    m1: torch.Tensor,
    m_new: torch.Tensor,
    sigma_s: torch.Tensor,
    sigma_prev: torch.Tensor,
    sigma_t: torch.Tensor,
    second_order: torch.Tensor,
) -> torch.Tensor:
    """UniC-bh2: re-do the step `sigma_s -> sigma_t` from `x_last` using the new prediction `m_new`.

    Args:
        x_last: samples at `sigma_s` the last prediction started from.
        x: the predicted samples at `sigma_t` (returned unchanged where nothing is corrected).
        m0: x0 predictions at `sigma_s`; m1: at `sigma_prev`; m_new: at `sigma_t`.
        second_order: `[W]` bool, frames whose previous predictor step was order 2.
    """
    h, hh, phi, alpha_t = _coefficients(sigma_s, sigma_t)
    base = frame_view(sigma_t / sigma_s) * x_last - frame_view(alpha_t * phi) * m0
    new_term = m_new - m0
    first = base - frame_view(alpha_t * phi) * (0.5 * new_term)
    if not bool(second_order.any()):
        return first
    phi_k1 = phi / hh - 1
    b1 = phi_k1 / phi
    b2 = (phi_k1 / hh - 0.5) * 2 / phi
    rk = (_lam(sigma_prev) - _lam(sigma_s)) / h
    rho0 = (b1 - b2) / (1 - rk)
    rho1 = b1 - rho0
    d1 = (m1 - m0) / frame_view(rk)
    second = base - frame_view(alpha_t * phi) * (frame_view(rho0) * d1 + frame_view(rho1) * new_term)
    return torch.where(frame_view(second_order), second, first)


class UniPC(SamplerRule):
    """UniPC multistep (bh2, order 2, predict x0, lower order final), one history per frame."""

    name = "unipc"
    summary = "UniPC bh2 order 2 (Wan's default), per-frame history"

    def start(self, plan: Plan, latents: torch.Tensor) -> UniPCState:
        frames = plan.num_frames
        zeros = torch.zeros(frames, dtype=torch.float32, device=latents.device)
        return UniPCState(
            denoised=torch.zeros_like(latents),
            denoised_prev=torch.zeros_like(latents),
            last_sample=torch.zeros_like(latents),
            sigma=zeros.clone(),
            sigma_prev=zeros.clone(),
            count=torch.zeros(frames, dtype=torch.int64, device=latents.device),
            order=torch.zeros(frames, dtype=torch.int64, device=latents.device),
        )

    def step(
        self,
        state: UniPCState,
        frames: torch.Tensor | slice,
        latents: torch.Tensor,
        velocity: torch.Tensor,
        sigma_from: torch.Tensor,
        sigma_to: torch.Tensor,
        remaining: torch.Tensor,
    ) -> tuple[torch.Tensor, Any]:
        moving = sigma_to < sigma_from
        count = state.count[frames]
        m_new = latents - frame_view(sigma_from) * velocity
        m0 = state.denoised[:, :, frames]
        m1 = state.denoised_prev[:, :, frames]
        sigma_s = state.sigma[frames]
        sigma_prev = state.sigma_prev[frames]
        corrected = moving & (count >= 1)
        x = latents
        if bool(corrected.any()):
            previous_order = state.order[frames]
            fixed = correct(
                state.last_sample[:, :, frames], latents, m0, m1, m_new,
                sigma_s, sigma_prev, sigma_from, corrected & (previous_order >= 2),
            )
            x = torch.where(frame_view(corrected), fixed, latents)
        order = torch.minimum(torch.minimum(count + 1, remaining), torch.full_like(count, 2))
        # Predict before the history is overwritten: m0, sigma_s, ... may be views into the state.
        out = predict(x, m_new, m0, sigma_from, sigma_s, sigma_to, moving & (order >= 2))
        moved = frame_view(moving)
        state.denoised_prev[:, :, frames] = torch.where(moved, m0, m1)
        state.denoised[:, :, frames] = torch.where(moved, m_new, m0)
        state.last_sample[:, :, frames] = torch.where(moved, x, state.last_sample[:, :, frames])
        state.sigma_prev[frames] = torch.where(moving, sigma_s, sigma_prev)
        state.sigma[frames] = torch.where(moving, sigma_from, sigma_s)
        state.count[frames] = torch.where(moving, torch.clamp(count + 1, max=2), count)
        state.order[frames] = torch.where(moving, order, state.order[frames])
        return torch.where(moved, out, latents), state

    def forget(self, state: UniPCState, frames: torch.Tensor) -> UniPCState:
        state.count[frames.to(state.count.device)] = 0
        return state
