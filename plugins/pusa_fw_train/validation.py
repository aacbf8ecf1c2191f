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

__all__ = [
    "ValidationPlan",
    "plan_sigma_vectors",
    "task_params",
    "validation_losses",
    "validation_results",
    "validation_sums",
]

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
def validation_sums(
    model: Callable[..., torch.Tensor],
    batches: Sequence[Batch],
    plans: Sequence[ValidationPlan],
    *,
    seed: int,
    sigma_bins: int,
    autocast_dtype: torch.dtype | None = None,
    weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """Summed held-out FAFM frame losses and counted-frame counts, per plan and per sigma bin.

    Sums add over batches (and over ranks, each with its own batches), so `validation_results` of the sum
    of several calls' results equals one call over all their batches.

    Args:
        model: the DiT (called as ``model(noised, sigmas, context)``).
        batches: held-out batches (one sample each is fine).
        plans: from `plan_sigma_vectors`.
        seed: seed of the fixed noise (keyed by sample index, like training draws).
        sigma_bins: number of equal-width bins of [0, 1].
        autocast_dtype: the training step's autocast dtype (None: fp32).
        weights: one per batch (default 1): 0 runs the forward but counts nothing (a padding batch).

    Returns:
        `[2 * (P + sigma_bins)]` float64 on the CPU: per plan (loss sum, frame count), then per bin.
    """
    sums = torch.zeros(len(plans) + sigma_bins, 2, dtype=torch.float64)
    weights = [1.0] * len(batches) if weights is None else list(weights)
    for plan_index, plan in enumerate(plans):
        for batch, weight in zip(batches, weights, strict=True):
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
                prediction = fafm_forward(
                    model, x0, eps, sigmas, batch.context, autocast_dtype=autocast_dtype
                )
                losses = frame_losses(prediction.float(), x0, eps).double().cpu() * weight
                counted = plan.counted.expand_as(losses)
                counts = torch.full_like(losses[counted], weight)
                sums[plan_index, 0] += losses[counted].sum()
                sums[plan_index, 1] += counts.sum()
                bins = (sigmas.cpu().double() * sigma_bins).long().clamp(max=sigma_bins - 1)
                sums[:, 0].index_add_(0, len(plans) + bins[counted], losses[counted])
                sums[:, 1].index_add_(0, len(plans) + bins[counted], counts)
    return sums.reshape(-1)


def validation_results(
    sums: torch.Tensor, plans: Sequence[ValidationPlan], sigma_bins: int
) -> dict[str, float]:
    """Mean losses from `validation_sums`.

    Returns:
        ``{"val/<plan>": loss, "val/sigma_<lo>-<hi>": loss, "val/all": loss}`` (bins without frames
        are left out).
    """
    table = sums.reshape(len(plans) + sigma_bins, 2)
    results = {
        f"val/{plan.name}": float(table[row, 0] / table[row, 1].clamp(min=1.0))
        for row, plan in enumerate(plans)
    }
    for index in range(sigma_bins):
        total, count = table[len(plans) + index]
        if count > 0:
            low, high = index / sigma_bins, (index + 1) / sigma_bins
            results[f"val/sigma_{low:.2f}-{high:.2f}"] = float(total / count)
    plan_total = table[: len(plans)].sum(dim=0)
    results["val/all"] = float(plan_total[0] / plan_total[1].clamp(min=1.0))
    return results


def validation_losses(
    model: Callable[..., torch.Tensor],
    batches: Sequence[Batch],
    plans: Sequence[ValidationPlan],
    *,
    seed: int,
    sigma_bins: int,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Held-out FAFM loss per plan and per sigma bin over `batches` (one process; see `validation_sums`)."""
    sums = validation_sums(
        model, batches, plans, seed=seed, sigma_bins=sigma_bins, autocast_dtype=autocast_dtype
    )
    return validation_results(sums, plans, sigma_bins)
