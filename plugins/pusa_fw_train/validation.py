"""Plan-aware validation: held-out FAFM loss for each task's conditioning, in every sigma bin.

For each configured task (t2v, i2v, start-end, extension, ...) the task's plan is compiled for the clip
length: the frames it holds (conditioning) keep the plan's held sigma and are left out of the loss, exactly
as at inference. The frames it generates are evaluated at fixed validation levels, the centres of the
``sigma_bins`` equal-width bins of [0, 1], so every bin is measured (a sampler's grid at 4 steps and shift
5 would see only sigma >= 0.6). With fixed noise per held-out sample (seeded), the loss is comparable
across steps and runs. Results: the mean loss per plan and per sigma bin over the counted frames.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pusa_fw.api import get_task
from pusa_fw.errors import InputError
from pusa_fw.fafm import fafm_forward, frame_losses
from pusa_fw.geometry import WAN21_GEOMETRY, LatentGeometry

from .step import Batch, draw_seed

__all__ = ["ValidationPlan", "plan_sigma_vectors", "task_params", "validation_losses"]

_PLAN_STEPS = 4


@dataclass(frozen=True)
class ValidationPlan:
    """Fixed per-frame sigmas `[S, F]` of one task's plan and the frames that count `[F]`."""

    name: str
    sigmas: torch.Tensor
    counted: torch.Tensor


def task_params(
    name: str, num_latent_frames: int, geometry: LatentGeometry = WAN21_GEOMETRY
) -> dict[str, Any]:
    """Clip-dependent `get_task` parameters of a validation task (extension: the first half is given)."""
    if name == "extension":  # hold the first half of the latents (at least one), clean
        given = max(num_latent_frames // 2, 1)
        return {"given_frames": geometry.num_frames(given), "strengths": [1.0]}
    return {}


def plan_sigma_vectors(
    names: Sequence[str],
    num_latent_frames: int,
    num_steps: int = _PLAN_STEPS,
    geometry: LatentGeometry = WAN21_GEOMETRY,
    sigma_bins: int = 5,
) -> list[ValidationPlan]:
    """Compile each named task for `num_latent_frames` latents; one sigma row per bin centre.

    Row k holds ``(k + 0.5) / sigma_bins`` at every generated frame and the plan's first-step sigma at
    every held frame.

    Raises:
        InputError: an unknown task, or a clip too short for it.
    """
    num_frames = geometry.num_frames(num_latent_frames)
    plans = []
    for name in names:
        try:
            task = get_task(name, **task_params(name, num_latent_frames, geometry))
            plan = task.plan(num_frames=num_frames, num_steps=num_steps, geometry=geometry)
        except (KeyError, ValueError) as error:
            raise InputError(
                f"validation plan {name!r} cannot be built for {num_latent_frames} latent frames: {error}"
            ) from None
        held_sigmas = plan.input_sigmas[0].float().clamp(0, 1)
        levels = (torch.arange(sigma_bins, dtype=torch.float64) + 0.5) / sigma_bins
        rows = torch.where(plan.held, held_sigmas, levels.float().unsqueeze(1).expand(-1, held_sigmas.shape[0]))
        plans.append(ValidationPlan(name, rows, ~plan.held))
    return plans


@torch.no_grad()
def validation_losses(
    model: Callable[..., torch.Tensor],
    batches: Sequence[Batch],
    plans: Sequence[ValidationPlan],
    *,
    seed: int,
    sigma_bins: int,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Held-out FAFM loss per plan and per sigma bin.

    Args:
        model: the DiT (called as ``model(noised, sigmas, context)``).
        batches: held-out batches (one sample each is fine).
        plans: from `plan_sigma_vectors`.
        seed: seed of the fixed noise (keyed by sample index, like training draws).
        sigma_bins: number of equal-width bins of [0, 1].

    Returns:
        ``{"val/<plan>": loss, "val/sigma_<lo>-<hi>": loss, "val/all": loss}`` (bins without frames
        are left out).
    """
    bin_sums = torch.zeros(sigma_bins, dtype=torch.float64)
    bin_counts = torch.zeros(sigma_bins, dtype=torch.float64)
    results: dict[str, float] = {}
    total, count = 0.0, 0.0
    for plan in plans:
        plan_sum, plan_count = 0.0, 0.0
        for batch in batches:
            x0 = batch.latents
            eps = torch.stack(
                [
                    torch.randn(
                        x0.shape[1:], generator=torch.Generator().manual_seed(draw_seed(seed, -1, 0, index))
                    )
                    for index in batch.indices
                ]
            ).to(x0.device)
            for row in plan.sigmas:
                sigmas = row.to(x0.device).expand(x0.shape[0], -1)
                prediction = fafm_forward(model, x0, eps, sigmas, batch.context, autocast_dtype=autocast_dtype)
                losses = frame_losses(prediction.float(), x0, eps).double().cpu()
                counted = plan.counted.expand_as(losses)
                plan_sum += float(losses[counted].sum())
                plan_count += float(counted.sum())
                bins = (sigmas.cpu().double() * sigma_bins).long().clamp(max=sigma_bins - 1)
                bin_sums.index_add_(0, bins[counted], losses[counted])
                bin_counts.index_add_(0, bins[counted], torch.ones_like(losses[counted]))
        results[f"val/{plan.name}"] = plan_sum / max(plan_count, 1.0)
        total, count = total + plan_sum, count + plan_count
    for index in range(sigma_bins):
        if bin_counts[index] > 0:
            low, high = index / sigma_bins, (index + 1) / sigma_bins
            results[f"val/sigma_{low:.2f}-{high:.2f}"] = float(bin_sums[index] / bin_counts[index])
    results["val/all"] = total / max(count, 1.0)
    return results
