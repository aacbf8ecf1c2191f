"""The sampling loop: walk a plan, call the backbone on each window, apply the sampler rule.

Everything that varies between tasks is in the plan; this loop has no task logic. Per step i:

1. the window's frames are shown to the model at ``plan.input_sigmas[i]`` (frames shown noisier than their
   state get a freshly noised copy; their state is untouched);
2. the (guided) velocity is computed once per guidance branch;
3. the sampler rule is handed only the frames whose level drops from ``sigmas[i]`` to ``sigmas[i + 1]``
   (as views when they are consecutive, so the update is in place); every other frame is left untouched,
   bit for bit;
4. held frames whose level rises are re-drawn from their source with fresh noise.

With a step cache (``cache=``, `pusa_fw.caches`), step 2 goes through a `CacheSession`: per guidance branch
the cache decides which frames the backbone computes (all, some through a partial backbone, or none) and
supplies the rest; the loop itself is unchanged, so held frames stay bit-exact under every cache. Without
a cache and without ``work=`` the backbone is called directly, exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from .backbone import Backbone
from .caches.base import StepCache
from .caches.session import CacheSession, CachedBackbone, resolve_cache
from .caches.work import WorkStats
from .context import context_for
from .errors import PusaError
from .flow import forward_noise, frame_view, interpolate
from .guidance import Guidance, guided_velocity
from .plan import Plan
from .samplers.base import SamplerRule
from .samplers.keyed_noise import KeyedNoiseRule, draw_noise_key
from .seeding import make_generator


@dataclass(frozen=True)
class StepInfo:
    """What a step callback receives.

    Attributes:
        step: index of the step just taken.
        num_steps: S.
        latents: `[B, C, N, H, W]` timeline latents after the step (do not modify).
        sigmas: `[N]` state levels after the step.
    """

    step: int
    num_steps: int
    latents: torch.Tensor
    sigmas: torch.Tensor


def initial_latents(plan: Plan, noise: torch.Tensor, source: torch.Tensor | None) -> torch.Tensor:
    """Start latents: held frames at `sigmas[0]` between their source and the sample's noise; others noise.

    Args:
        plan: the plan.
        noise: `[B, C, N, H, W]` the sample's noise.
        source: `[B, C, N, H, W]` source latents (read at held frames only), or None if nothing is held.
    """
    check_latents(plan, noise, "noise")
    if not bool(plan.held.any()):
        return noise.clone()
    if source is None:
        frames = plan.held.nonzero().squeeze(1).tolist()
        raise PusaError(f"the plan holds latent frames {frames}; pass their latents as `source`")
    check_latents(plan, source, "source")
    if source.shape != noise.shape:
        raise PusaError(f"source has shape {tuple(source.shape)} but noise has {tuple(noise.shape)}")
    sigma0 = plan.sigmas[0].to(noise.device)
    mixed = interpolate(source.to(noise.dtype), noise, sigma0)
    return torch.where(frame_view(plan.held.to(noise.device)), mixed, noise)


def check_latents(plan: Plan, latents: torch.Tensor, name: str) -> None:
    """Raise unless `latents` is `[B, C, N, H, W]` with N the plan's frame count."""
    if latents.dim() != 5 or latents.shape[2] != plan.num_latent_frames:
        raise PusaError(
            f"{name} must be [B, C, N, H, W] with N={plan.num_latent_frames} latent frames, got {tuple(latents.shape)}"
        )


def _take(x: torch.Tensor, frames: torch.Tensor | slice) -> torch.Tensor:
    return x[:, :, frames]


def _index(frames: torch.Tensor, device: torch.device) -> torch.Tensor | slice:
    """Frame indices as a slice when they are consecutive (views, in-place updates), else a tensor."""
    if frames.numel() and int(frames[-1]) - int(frames[0]) == frames.numel() - 1:
        if frames.numel() == 1 or bool((frames[1:] > frames[:-1]).all()):
            return slice(int(frames[0]), int(frames[-1]) + 1)
    return frames.to(device)


def sample(
    backbone: Backbone,
    plan: Plan,
    noise: torch.Tensor,
    *,
    sampler: SamplerRule | str = "euler",
    source: torch.Tensor | None = None,
    context: Any = None,
    negative_context: Any = None,
    guidance: Guidance | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[StepInfo], None] | None = None,
    cache: StepCache | str | None = None,
    work: WorkStats | None = None,
) -> torch.Tensor:
    """Run `plan` and return the final latents.

    Args:
        backbone: velocity model (`Backbone`).
        plan: the validated plan.
        noise: `[B, C, N, H, W]` the sample's noise (draw it with `pusa_fw.seeding.draw_noise`).
        sampler: a `SamplerRule` or a registered sampler name (``"euler"``, ``"unipc"``).
        source: `[B, C, N, H, W]` latents of held frames (other frames ignored).
        context: conditioning for the backbone, or a window-aware context (`PromptTimeline`).
        negative_context: conditioning of the negative prompt (for `cfg_scale != 1`).
        guidance: text / history guidance scales (default: none).
        generator: CPU generator for fresh noise (re-noising, history guidance); default seed 0.
        callback: called after every step with a `StepInfo`.
        cache: a `StepCache` or registered cache name (``"none"``, ``"teacache"``, ``"framecache"``); a
            `CachedBackbone` given as `backbone` brings its own cache and work stats.
        work: a `WorkStats` the loop adds the DiT work done to (token-block evaluations, FLOPs, and the
            same without a cache).

    Returns:
        `[B, C, N, H, W]` latents; every frame at sigma 0.
    """
    if isinstance(backbone, CachedBackbone):
        if cache is not None:
            raise PusaError("the backbone already carries a cache (CachedBackbone); do not pass cache= too")
        cache, work = backbone.cache, work if work is not None else backbone.work
        backbone = backbone.backbone
    session = None
    if cache is not None or work is not None:
        session = CacheSession(resolve_cache(cache), backbone, work)
    rule = _resolve_sampler(sampler)
    guidance = guidance or Guidance()
    generator = generator or make_generator(0)
    x = initial_latents(plan, noise, source)
    device, dtype = x.device, x.dtype

    def fresh(shape: torch.Size) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(device, dtype)

    state = rule.start(plan, x)
    if isinstance(rule, KeyedNoiseRule):  # e.g. lcm: its fresh noise is keyed per frame from this seed
        state = rule.with_noise_key(state, draw_noise_key(generator))
    sigmas = plan.sigmas.to(device)
    inputs = plan.input_sigmas.to(device)
    moving_all = plan.update_mask()
    renoise_all = plan.renoise_mask()
    remaining_host = plan.remaining_updates()
    remaining_all = remaining_host.to(device)
    context_all = plan.context_mask()
    for i in range(plan.num_steps):
        window = plan.window_slice(i)
        frames = plan.window_frames(i)
        where: torch.Tensor | slice = window if window is not None else frames.to(device)
        if bool(moving_all[i, frames].any()):
            current = _take(x, where)
            state_sigma, shown_sigma = sigmas[i, where], inputs[i, where]
            shown = current
            if bool((shown_sigma > state_sigma).any()):
                shown = forward_noise(current, state_sigma, shown_sigma, fresh(current.shape))
            model = backbone if session is None else session.view(
                i, frames, moving_all[i, frames], remaining_host[i, frames])
            velocity = guided_velocity(
                model,
                shown,
                shown_sigma.unsqueeze(0).expand(x.shape[0], -1),
                context_for(context, frames),
                context_for(negative_context, frames) if negative_context is not None else None,
                guidance,
                context_all[i, frames],
                lambda: fresh(current.shape),
            )
            positions = moving_all[i, frames].nonzero().squeeze(1)
            in_window, on_timeline = _index(positions, device), _index(frames[positions], device)
            part = _take(x, on_timeline)
            updated, state = rule.step(
                state, on_timeline, part, velocity[:, :, in_window], sigmas[i, on_timeline],
                sigmas[i + 1, on_timeline], remaining_all[i, on_timeline],
            )
            if not isinstance(on_timeline, slice) or updated.data_ptr() != part.data_ptr():
                x[:, :, on_timeline] = updated
        if bool(renoise_all[i].any()):
            redraw = renoise_all[i].nonzero().squeeze(1).to(device)
            assert source is not None
            clean = source[:, :, redraw].to(dtype)
            x[:, :, redraw] = interpolate(clean, fresh(clean.shape), sigmas[i + 1, redraw])
            state = rule.forget(state, renoise_all[i])
        if callback is not None:
            callback(StepInfo(step=i, num_steps=plan.num_steps, latents=x, sigmas=sigmas[i + 1]))
    return x


def _resolve_sampler(sampler: SamplerRule | str) -> SamplerRule:
    if isinstance(sampler, SamplerRule):
        return sampler
    from .registry_lookup import lookup

    found = lookup("samplers", sampler)
    return found() if isinstance(found, type) else found
