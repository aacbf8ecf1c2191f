"""The Pusa Sampler node's work: pusa-fw's own sampling loop over a plan, on ComfyUI's `MODEL`.

Nothing of ComfyUI's sampler runs: the plan gives every frame its own sigma path, `pusa_fw.sample` walks it
with a registered sampler rule (``euler``, ``unipc``, or a plugin's), and `ComfyWanBackbone` evaluates the
model. ComfyUI still owns the model: it loads (and, on small cards, partially loads) the patched `MODEL`,
shows the progress bar with latent previews and honours Cancel between steps. The run follows ComfyUI's
sampler protocol where nodes stacked on the `MODEL` rely on it (``pre_run`` / ``cleanup``, tensors in the
model options moved to the device, ``sample_sigmas``, ``cond_or_uncond`` and ``uuids`` in the transformer
options); ComfyUI's sampler-level wrappers (OUTER_SAMPLE, SAMPLER_SAMPLE, PREDICT_NOISE, CALC_COND_BATCH)
do not run, as no ComfyUI sampler does.

Memory: the load is sized for the largest forward: the batched text branches (the history branch is a
separate batch-1 forward), one window's frames, plus the per-token modulation ComfyUI's Wan model builds
when the frames' timesteps differ (`comfy_bridge.modulation_memory`), which its own estimate leaves out.
"""

from __future__ import annotations

from typing import Any

import torch

from pusa_fw.errors import InputError
from pusa_fw.guidance import Guidance
from pusa_fw.sampling import StepInfo, sample
from pusa_fw.seeding import draw_noise, make_generator

from . import comfy_bridge
from .backbone import ComfyWanBackbone
from .plan_spec import PusaPlanSpec
from .prompts import PromptEntry, conditioning_tensor, prompt_context

__all__ = ["build_cache", "check_latent", "forward_shape", "has_unequal_frame_sigmas", "run_sampler"]


def check_latent(spec: PusaPlanSpec, latent: Any, channels: int | None = None) -> torch.Tensor:
    """The `[1, C, N, h, w]` samples of a ComfyUI `LATENT`, checked against the plan (and the model's C).

    Raises:
        InputError: not a video latent, a batch of several, another frame count than the plan's, or other
            channels than `channels` (a latent of another VAE than the model's).
    """
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.dim() != 5:
        shape = list(samples.shape) if isinstance(samples, torch.Tensor) else type(latent).__name__
        raise InputError(f"latent must be a Wan video LATENT [1, channels, frames, h, w], got {shape}")
    if channels is not None and samples.shape[1] != channels:
        raise InputError(
            f"latent has {samples.shape[1]} channels but the MODEL takes {channels}: encode with the VAE of "
            "the model (Wan2.1_VAE: 16 channels; Wan2.2_VAE for TI2V-5B: 48)"
        )
    if samples.shape[0] != 1:
        raise InputError(f"latent holds a batch of {samples.shape[0]}; the Pusa Sampler makes one video at a time")
    if samples.shape[2] != spec.num_latent_frames:
        raise InputError(
            f"latent has {samples.shape[2]} latent frames but the plan has {spec.num_latent_frames} "
            f"({spec.num_frames} pixel frames); use the Pusa Conditioning output of this plan, or set the "
            f"Pusa Task's num_frames to {spec.geometry.num_frames(samples.shape[2])}"
        )
    return samples


def forward_shape(spec: PusaPlanSpec, samples: torch.Tensor, guidance: Guidance) -> tuple[int, ...]:
    """`[B, C, F, h, w]` of the plan's largest forward pass.

    B is 2 with text guidance (both branches in one batch), else 1: the history branch runs as its own
    batch-1 forward (`pusa_fw.guidance.guided_velocity`). F is the widest window (rolling and loop plans
    run windows, not the whole timeline).
    """
    plan = spec.plan
    frames = max(int(plan.window_frames(step).numel()) for step in range(plan.num_steps))
    batch = 2 if guidance.cfg_scale != 1.0 else 1
    return (batch, int(samples.shape[1]), frames, int(samples.shape[3]), int(samples.shape[4]))


def has_unequal_frame_sigmas(spec: PusaPlanSpec, guidance: Guidance) -> bool:
    """Whether some forward shows its frames different sigmas (then ComfyUI's Wan model gets `[B, F]` t).

    True when a window's input sigmas differ at some step, or history guidance hides context frames (its
    branch shows them at sigma 1).
    """
    plan = spec.plan
    for step in range(plan.num_steps):
        shown = plan.input_sigmas[step, plan.window_frames(step)]
        if bool((shown != shown[0]).any()):
            return True
    return guidance.history_scale != 1.0 and bool(plan.context_mask().any())


def run_sampler(
    model: Any,
    spec: PusaPlanSpec,
    latent: Any,
    positive: Any,
    negative: Any = None,
    *,
    seed: int = 0,
    sampler: str = "unipc",
    cfg: float = 3.0,
    history_guidance: float = 1.0,
    prompt_schedule: list[PromptEntry] | None = None,
    cache: str = "none",
    cache_params: str | dict[str, Any] = "{}",
) -> dict[str, torch.Tensor]:
    """Generate the latents of `spec`'s plan with a ComfyUI Wan `MODEL`.

    Args:
        model: ComfyUI `MODEL` (Wan text-to-video or Wan2.2 TI2V-5B, LoRAs already applied by the stock
            loaders).
        spec: the compiled task.
        latent: `LATENT` with `[1, C, N, h, w]` samples (C: the model's latent channels, 16 or 48): the given
            latents at the held frames (the Pusa Conditioning output), or any latent of the right shape when
            nothing is held (t2v).
        positive: `CONDITIONING` of the prompt (from pixel frame 0).
        negative: `CONDITIONING` of the negative prompt (needed when ``cfg != 1``).
        seed: noise seed (pusa-fw's: the same seed gives the same video as ``pusa-fw generate``).
        sampler: a registered sampler rule name.
        cfg: text guidance scale (1 skips the negative branch).
        history_guidance: history guidance scale (1 = off).
        prompt_schedule: later prompts along a rolling or loop timeline.
        cache: a registered step cache (``none``, ``teacache``, ``framecache``).
        cache_params: its parameters, a JSON object (the node's string widget) or a dict.

    Returns:
        ``{"samples": [1, C, N, h, w]}`` in the VAE's latent space, on the CPU (a `LATENT`).
    """
    backbone = ComfyWanBackbone(model)
    step_cache = build_cache(cache, cache_params)
    step_cache.check_backbone(backbone)  # framecache needs partial computation: refused before any load
    samples = check_latent(spec, latent, channels=comfy_bridge.model_channels(backbone.model))
    guidance = Guidance(cfg_scale=cfg, history_scale=history_guidance)
    context = prompt_context(spec, positive, prompt_schedule)
    comfy_bridge.refuse_conditioning_hooks(positive, "positive")
    for entry in prompt_schedule or []:
        comfy_bridge.refuse_conditioning_hooks(entry.conditioning, f"the prompt from frame {entry.frame}")
    negative_context = None
    if guidance.cfg_scale != 1.0:
        if negative is None:
            raise InputError(f"cfg={cfg} needs a negative CONDITIONING; connect one or set cfg to 1")
        comfy_bridge.refuse_conditioning_hooks(negative, "negative")
        negative_context = conditioning_tensor(negative, "negative")
    device = comfy_bridge.compute_device()
    shape = forward_shape(spec, samples, guidance)
    modulation = comfy_bridge.modulation_memory(backbone.model, shape) if has_unequal_frame_sigmas(spec, guidance) else 0
    comfy_bridge.load_for_sampling(backbone.model, shape, extra_memory=modulation)
    source = None
    if bool(spec.plan.held.any()):
        source = backbone.to_model_space(samples.to(device, torch.float32))
    generator = make_generator(seed)
    noise = draw_noise(tuple(samples.shape), generator, device=device)
    negative_on_device = _to(negative_context, device)
    backbone.start_run(spec.plan.sigmas.amax(dim=1).to(device, torch.float32), negative_on_device)
    preview = comfy_bridge.preview_callback(backbone.model, spec.plan.num_steps)

    def on_step(info: StepInfo) -> None:
        # The state latents stand in for ComfyUI's x0 (the previewer shows frame 0 of the first sample).
        preview(info.step, info.latents, info.latents, info.num_steps)
        comfy_bridge.check_interrupt()

    with torch.no_grad(), comfy_bridge.sampling_run(backbone.model):
        latents = sample(
            backbone, spec.plan, noise, sampler=sampler, source=source, context=_to(context, device),
            negative_context=negative_on_device, guidance=guidance, generator=generator, callback=on_step,
            cache=None if step_cache.name == "none" else step_cache,
        )
        return {"samples": backbone.from_model_space(latents).cpu()}


def build_cache(name: str, params: str | dict[str, Any]) -> Any:
    """The `StepCache` `name` with `params` (a JSON object string or a dict); one-line `InputError` otherwise."""
    import json

    from pydantic import ValidationError

    from pusa_fw.api import get_cache
    from pusa_fw.cli_params import one_line_validation_error

    if isinstance(params, str):
        try:
            parsed = json.loads(params or "{}")
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise InputError(f"cache_params {params!r} is not a JSON object; write e.g. {{\"threshold\": 0.2}}")
        params = parsed
    try:
        return get_cache(name, **params)
    except ValidationError as error:
        raise InputError(f"cache_params for cache {name!r}: {one_line_validation_error(error)}") from error


def _to(context: Any, device: torch.device) -> Any:
    from pusa_fw.context import PromptTimeline

    if isinstance(context, torch.Tensor):
        return context.to(device)
    if isinstance(context, PromptTimeline):
        return PromptTimeline(starts=context.starts, contexts=[_to(item, device) for item in context.contexts])
    return context
