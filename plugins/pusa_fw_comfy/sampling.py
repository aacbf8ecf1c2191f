"""The Pusa Sampler node's work: pusa-fw's own sampling loop over a plan, on ComfyUI's `MODEL`.

Nothing of ComfyUI's sampler runs: the plan gives every frame its own sigma path, `pusa_fw.sample` walks it
with a registered sampler rule (``euler``, ``unipc``, or a plugin's), and `ComfyWanBackbone` evaluates the
model. ComfyUI still owns the model: it loads (and, on small cards, partially loads) the patched `MODEL`,
shows the progress bar and honours Cancel between steps.
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

__all__ = ["check_latent", "run_sampler"]


def check_latent(spec: PusaPlanSpec, latent: Any) -> torch.Tensor:
    """The `[1, C, N, h, w]` samples of a ComfyUI `LATENT`, checked against the plan.

    Raises:
        InputError: not a video latent, a batch of several, or another frame count than the plan's.
    """
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.dim() != 5:
        shape = list(samples.shape) if isinstance(samples, torch.Tensor) else type(latent).__name__
        raise InputError(f"latent must be a Wan video LATENT [1, 16, frames, h, w], got {shape}")
    if samples.shape[0] != 1:
        raise InputError(f"latent holds a batch of {samples.shape[0]}; the Pusa Sampler makes one video at a time")
    if samples.shape[2] != spec.num_latent_frames:
        raise InputError(
            f"latent has {samples.shape[2]} latent frames but the plan has {spec.num_latent_frames} "
            f"({spec.num_frames} pixel frames); use the Pusa Conditioning output of this plan, or set the "
            f"Pusa Task's num_frames to {spec.geometry.num_frames(samples.shape[2])}"
        )
    return samples


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
) -> dict[str, torch.Tensor]:
    """Generate the latents of `spec`'s plan with a ComfyUI Wan `MODEL`.

    Args:
        model: ComfyUI `MODEL` (Wan text-to-video, LoRAs already applied by the stock loaders).
        spec: the compiled task.
        latent: `LATENT` with `[1, 16, N, h, w]` samples: the given latents at the held frames (the Pusa
            Conditioning output), or any latent of the right shape when nothing is held (t2v).
        positive: `CONDITIONING` of the prompt (from pixel frame 0).
        negative: `CONDITIONING` of the negative prompt (needed when ``cfg != 1``).
        seed: noise seed (pusa-fw's: the same seed gives the same video as ``pusa-fw generate``).
        sampler: a registered sampler rule name.
        cfg: text guidance scale (1 skips the negative branch).
        history_guidance: history guidance scale (1 = off).
        prompt_schedule: later prompts along a rolling or loop timeline.

    Returns:
        ``{"samples": [1, 16, N, h, w]}`` in the VAE's latent space, on the CPU (a `LATENT`).
    """
    backbone = ComfyWanBackbone(model)
    samples = check_latent(spec, latent)
    guidance = Guidance(cfg_scale=cfg, history_scale=history_guidance)
    context = prompt_context(spec, positive, prompt_schedule)
    negative_context = None
    if guidance.cfg_scale != 1.0:
        if negative is None:
            raise InputError(f"cfg={cfg} needs a negative CONDITIONING; connect one or set cfg to 1")
        negative_context = conditioning_tensor(negative, "negative")
    device = comfy_bridge.compute_device()
    branches = 1 + (guidance.cfg_scale != 1.0) + (guidance.history_scale != 1.0)
    comfy_bridge.load_for_sampling(backbone.model, (branches, *samples.shape[1:]))
    source = None
    if bool(spec.plan.held.any()):
        source = backbone.to_model_space(samples.to(device, torch.float32))
    generator = make_generator(seed)
    noise = draw_noise(tuple(samples.shape), generator, device=device)
    bar = comfy_bridge.progress_bar(spec.plan.num_steps)

    def on_step(info: StepInfo) -> None:
        bar.update(1)
        comfy_bridge.check_interrupt()

    with torch.no_grad():
        latents = sample(
            backbone, spec.plan, noise, sampler=sampler, source=source, context=_to(context, device),
            negative_context=_to(negative_context, device), guidance=guidance, generator=generator,
            callback=on_step,
        )
        return {"samples": backbone.from_model_space(latents).cpu()}


def _to(context: Any, device: torch.device) -> Any:
    from pusa_fw.context import PromptTimeline

    if isinstance(context, torch.Tensor):
        return context.to(device)
    if isinstance(context, PromptTimeline):
        return PromptTimeline(starts=context.starts, contexts=[_to(item, device) for item in context.contexts])
    return context
