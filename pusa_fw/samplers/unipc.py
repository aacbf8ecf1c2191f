"""UniPC (bh2, order 2, x0-prediction) generalised to one sigma sequence per frame.

Wan's default solver keeps, per sample, the x0 predictions of the last two steps, corrects the incoming
sample with the new prediction (UniC) and then predicts the next one (UniP). Here every frame keeps its
own history, because on a staircase or rolling plan the frames walk their sequences at different rows:
a frame's corrector and predictor use *its* previous levels. With all frames sharing one sequence this is
exactly the scalar solver (the predictor order is `min(2, updates so far + 1, updates left)`; the corrector
uses the order chosen at the frame's previous update). Coefficients are computed in float32 from the plan's
sigmas rounded to float32, as the official scheduler does (the backbone still sees the float64 levels).

Both updates are linear in the latents involved, so each is evaluated as one weighted sum whose per-frame
weights `[W]` already encode the order; no per-order branch touches the large tensors.
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


def predictor_weights(
    sigma_s: torch.Tensor, sigma_prev: torch.Tensor, sigma_t: torch.Tensor, second_order: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """UniP-bh2 from `sigma_s` to `sigma_t` as `x_t = a * x + c0 * m0 + c1 * m1` (all `[W]`).

    `m0` is the x0 prediction at `sigma_s`, `m1` the one at `sigma_prev` (used where `second_order`).
    """
    h = _lam(sigma_t) - _lam(sigma_s)
    scale = (1 - sigma_t) * torch.expm1(-h)  # alpha_t * h_phi_1, also alpha_t * B_h for bh2
    a = sigma_t / sigma_s
    rk = (_lam(sigma_prev) - _lam(sigma_s)) / h
    half = 0.5 * scale / rk  # rho_p = 0.5 for order 2
    c0 = torch.where(second_order, -scale + half, -scale)
    c1 = torch.where(second_order, -half, torch.zeros_like(half))
    return a, c0, c1


def corrector_weights(
    sigma_s: torch.Tensor, sigma_prev: torch.Tensor, sigma_t: torch.Tensor, second_order: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """UniC-bh2 redoing `sigma_s -> sigma_t` as `x_t = a * x_last + c0 * m0 + c1 * m1 + cn * m_new` (`[W]`).

    `m0` is the prediction at `sigma_s`, `m1` at `sigma_prev`, `m_new` at `sigma_t`; `second_order` marks
    frames whose previous predictor step was order 2.
    """
    h = _lam(sigma_t) - _lam(sigma_s)
    hh = -h
    phi = torch.expm1(hh)
    scale = (1 - sigma_t) * phi
    a = sigma_t / sigma_s
    phi_k1 = phi / hh - 1
    b1 = phi_k1 / phi
    b2 = (phi_k1 / hh - 0.5) * 2 / phi
    rk = (_lam(sigma_prev) - _lam(sigma_s)) / h
    rho0 = (b1 - b2) / (1 - rk)
    rho1 = b1 - rho0
    d1_weight = scale * rho0 / rk
    c0 = torch.where(second_order, -scale + d1_weight + scale * rho1, -0.5 * scale)
    c1 = torch.where(second_order, -d1_weight, torch.zeros_like(scale))
    cn = torch.where(second_order, -scale * rho1, -0.5 * scale)
    return a, c0, c1, cn


def weighted_sum(
    terms: list[tuple[torch.Tensor, torch.Tensor]], out: torch.Tensor | None = None
) -> torch.Tensor:
    """`sum_k weight_k * tensor_k` with per-frame weights `[W]` and tensors `[B, C, W, H, W']`."""
    (first_tensor, first_weight), rest = terms[0], terms[1:]
    result = torch.mul(first_tensor, frame_view(first_weight), out=out) if out is not None else (
        first_tensor * frame_view(first_weight)
    )
    for tensor, weight in rest:
        result.addcmul_(tensor, frame_view(weight))
    return result


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
        spare: two scratch buffers shaped like the timeline, rotated with the history.
    """

    denoised: torch.Tensor
    denoised_prev: torch.Tensor
    last_sample: torch.Tensor
    sigma: torch.Tensor
    sigma_prev: torch.Tensor
    count: torch.Tensor
    order: torch.Tensor
    spare: list[torch.Tensor]


def _covers_all(frames: torch.Tensor | slice, num_latent_frames: int) -> bool:
    return isinstance(frames, slice) and frames.start == 0 and frames.stop == num_latent_frames


class UniPC(SamplerRule):
    """UniPC multistep (bh2, order 2, predict x0, lower order final), one history per frame."""

    name = "unipc"
    summary = "UniPC bh2 order 2 (Wan's default), per-frame history"

    def start(self, plan: Plan, latents: torch.Tensor) -> UniPCState:
        frames = plan.num_latent_frames
        zeros = torch.zeros(frames, dtype=torch.float32, device=latents.device)
        return UniPCState(
            denoised=torch.zeros_like(latents),
            denoised_prev=torch.zeros_like(latents),
            last_sample=torch.zeros_like(latents),
            sigma=zeros.clone(),
            sigma_prev=zeros.clone(),
            count=torch.zeros(frames, dtype=torch.int64, device=latents.device),
            order=torch.zeros(frames, dtype=torch.int64, device=latents.device),
            spare=[torch.empty_like(latents), torch.empty_like(latents)],
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
        # The plan's float64 levels went to the backbone; the coefficients are formed in float32, as the
        # official scheduler forms them (a step that vanishes in float32, e.g. 1e-77 -> 0, is the identity).
        sigma_from, sigma_to = sigma_from.to(torch.float32), sigma_to.to(torch.float32)
        moving = sigma_to < sigma_from
        count = state.count[frames].clone()
        sigma_s = state.sigma[frames].clone()
        sigma_prev = state.sigma_prev[frames].clone()
        previous_order = state.order[frames].clone()
        m0 = state.denoised[:, :, frames]
        m1 = state.denoised_prev[:, :, frames]
        # On the common path (the window is the timeline) the results go into two spare buffers that
        # rotate with the history, so no step allocates (and page-faults) fresh large tensors.
        reuse = _covers_all(frames, state.count.shape[0]) and len(state.spare) == 2
        m_new = torch.addcmul(latents, velocity, frame_view(-sigma_from), out=state.spare[0] if reuse else None)
        corrected = moving & (count >= 1)
        if bool(corrected.any()):
            weights = corrector_weights(sigma_s, sigma_prev, sigma_from, previous_order >= 2)
            a, c0, c1, cn = (torch.where(corrected, w, torch.zeros_like(w)) for w in weights)
            terms = [(state.last_sample[:, :, frames], a), (m0, c0), (m1, c1), (m_new, cn)]
            if not bool(corrected.all()):
                terms.append((latents, (~corrected).to(a.dtype)))
            x = weighted_sum(terms, out=state.spare[1] if reuse else None)
        else:
            x = state.spare[1].copy_(latents) if reuse else latents.clone()
        order = torch.minimum(torch.minimum(count + 1, remaining), torch.full_like(count, 2))
        a, c0, c1 = predictor_weights(sigma_from, sigma_s, sigma_to, moving & (order >= 2))
        a, c0, c1 = torch.where(moving, a, 1.0), torch.where(moving, c0, 0.0), torch.where(moving, c1, 0.0)
        weighted_sum([(x, a), (m_new, c0), (m0, c1)], out=latents)
        self._remember(state, frames, moving, x, m0, m1, m_new)
        state.sigma_prev[frames] = torch.where(moving, sigma_s, sigma_prev)
        state.sigma[frames] = torch.where(moving, sigma_from, sigma_s)
        state.count[frames] = torch.where(moving, torch.clamp(count + 1, max=2), count)
        state.order[frames] = torch.where(moving, order, previous_order)
        return latents, state

    @staticmethod
    def _remember(
        state: UniPCState,
        frames: torch.Tensor | slice,
        moving: torch.Tensor,
        x: torch.Tensor,
        m0: torch.Tensor,
        m1: torch.Tensor,
        m_new: torch.Tensor,
    ) -> None:
        """Shift the x0 history of the moving frames (buffers are swapped when the window is everything)."""
        if bool(moving.all()):
            if _covers_all(frames, state.count.shape[0]):
                freed = [state.denoised_prev, state.last_sample]
                state.denoised_prev, state.denoised, state.last_sample = state.denoised, m_new, x
                state.spare = freed
            else:
                state.denoised_prev[:, :, frames] = m0
                state.denoised[:, :, frames] = m_new
                state.last_sample[:, :, frames] = x
            return
        moved = frame_view(moving)
        state.denoised_prev[:, :, frames] = torch.where(moved, m0, m1)
        state.denoised[:, :, frames] = torch.where(moved, m_new, m0)
        state.last_sample[:, :, frames] = torch.where(moved, x, state.last_sample[:, :, frames])

    def forget(self, state: UniPCState, frames: torch.Tensor) -> UniPCState:
        state.count[frames.to(state.count.device)] = 0
        return state
