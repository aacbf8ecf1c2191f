"""Classifier-free guidance and history guidance, combined in one velocity.

Text guidance contrasts the prompt with a negative prompt. History guidance (Diffusion Forcing
Transformer's HG-v, here for flow matching) contrasts the model that sees the held and history frames with
one that sees them as pure noise (sigma 1). With scales ``g_t`` and ``g_h``::

    v = v(neg, h) + g_t * (v(c, h) - v(neg, h)) + (g_h - 1) * (v(c, h) - v(c, noise))

on the generated frames; the context frames themselves get only the text-guided term (their unguided
branch saw nothing but noise there). A branch whose scale is 1 is never evaluated; with ``g_h = 1`` this
is the usual ``v_neg + g_t * (v_pos - v_neg)`` in that order of operations (Wan's and Pusa's).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from pydantic import BaseModel, ConfigDict, Field

from .backbone import Backbone
from .errors import PusaError


class Guidance(BaseModel):
    """Guidance scales. 1 switches a branch off (its forward pass is skipped)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cfg_scale: float = Field(1.0, ge=0, description="text guidance scale (Pusa/Wan CLI default 3-5)")
    history_scale: float = Field(1.0, ge=0, description="history guidance scale (DFoT HG-v), 1 = off")


def guided_velocity(
    backbone: Backbone,
    latents: torch.Tensor,
    sigmas: torch.Tensor,
    context: Any,
    negative_context: Any,
    guidance: Guidance,
    context_frames: torch.Tensor,
    draw_noise: Callable[[], torch.Tensor],
) -> torch.Tensor:
    """The guided velocity of one window.

    Args:
        backbone: the velocity model.
        latents: `[B, C, W, H, W']` model input.
        sigmas: `[B, W]` input levels.
        context: conditioning of the prompt.
        negative_context: conditioning of the negative prompt (needed when `cfg_scale != 1`).
        guidance: the scales.
        context_frames: `[W]` bool, frames hidden from the unguided history branch.
        draw_noise: returns fresh standard normal noise shaped like `latents`.

    Returns:
        `[B, C, W, H, W']` velocity.
    """
    use_text = guidance.cfg_scale != 1.0
    use_history = guidance.history_scale != 1.0 and bool(context_frames.any())
    if use_text and negative_context is None:
        raise PusaError(
            f"cfg_scale={guidance.cfg_scale} needs a negative context (the negative prompt's embedding); "
            "pass negative_context or set cfg_scale=1"
        )
    negative = None
    if use_text:  # both branches in one request, so a CFG-parallel backbone can run them side by side
        branches = getattr(backbone, "velocities", None)
        if branches is None:
            conditional = backbone.velocity(latents, sigmas, context)
            negative = backbone.velocity(latents, sigmas, negative_context)
        else:
            conditional, negative = branches(latents, sigmas, [context, negative_context])
    else:
        conditional = backbone.velocity(latents, sigmas, context)
    if not use_text and not use_history:
        return conditional
    if not use_history:
        assert negative is not None
        return negative + guidance.cfg_scale * (conditional - negative)
    hidden = context_frames.to(latents.device).view(1, 1, -1, 1, 1)
    masked_latents = torch.where(hidden, draw_noise(), latents)
    masked_sigmas = torch.where(context_frames.to(sigmas.device).unsqueeze(0), torch.ones_like(sigmas), sigmas)
    unguided = backbone.velocity(masked_latents, masked_sigmas, context)
    text_guided = conditional if negative is None else negative + guidance.cfg_scale * (conditional - negative)
    out = text_guided + (guidance.history_scale - 1.0) * (conditional - unguided)
    # The context frames themselves are not history-guided: their unguided branch saw only noise there.
    return torch.where(hidden, text_guided, out)
