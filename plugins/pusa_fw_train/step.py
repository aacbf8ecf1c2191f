"""The FAFM training step: per-sample draws, one forward through the (wrapped) model, per-frame loss.

The model is called as a plain callable, ``model(noised, sigmas, context)``, so a DDP or FSDP2 wrapper's
forward (and with it the gradient synchronisation) is never bypassed. The sigmas and the noise of a
sample are drawn from a generator keyed by ``(seed, step, micro-step, sample index)``: a sample gets the
same draw whichever rank holds it and however the global batch is split, and a resumed run needs no
generator state to continue exactly.

Nothing here synchronises with the host: on CUDA the collated batch and the draws are staged in pinned
(page-locked) host memory and copied with ``non_blocking=True``, so the copy is queued behind the previous
micro-step's backward instead of waiting for it (a pageable copy blocks the CPU until the stream drains).
PyTorch's caching host allocator reuses the pinned blocks from step to step, and records the copy on the
stream so a block is not reused before its copy has run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from pusa_fw.fafm import bsmntw_weights, fafm_forward, frame_losses, normalised_frame_weights
from pusa_fw.ptss import PTSS

from pusa_fw.training_data import TrainingSample, pad_contexts

__all__ = ["Batch", "StepDraws", "collate", "draw_for_batch", "draw_seed", "frame_loss_terms", "to_device"]


def draw_seed(seed: int, step: int, micro_step: int, sample_index: int) -> int:
    """A 63-bit seed for one sample's draws at one (micro-)step of a run."""
    text = f"pusa-fw-train:{seed}:{step}:{micro_step}:{sample_index}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") >> 1


@dataclass
class Batch:
    """Stacked samples: `latents` `[B, C, F, H, W]`, `context` `[B, ...]` (as the adapter collates), captions."""

    latents: torch.Tensor
    context: torch.Tensor
    indices: tuple[int, ...]
    captions: tuple[str, ...]


ContextCollate = Callable[[Sequence[torch.Tensor]], torch.Tensor]


def _staged(device: torch.device) -> bool:
    return device.type == "cuda"


def _joined(parts: Sequence[torch.Tensor], device: torch.device, *, stack: bool) -> torch.Tensor:
    """``torch.stack``/``torch.cat`` of CPU float32 `parts`, written straight into pinned memory on CUDA."""
    join = torch.stack if stack else torch.cat
    if not _staged(device):
        return join(list(parts))
    first = parts[0]
    shape = (len(parts), *first.shape) if stack else (sum(part.shape[0] for part in parts), *first.shape[1:])
    return join(list(parts), out=_pinned_empty(shape, first.dtype))


def _pinned_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, pin_memory=True)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`: on CUDA from pinned memory with ``non_blocking=True``, else ``.to``."""
    if not _staged(device):
        return tensor.to(device)
    if tensor.device.type == "cpu" and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def collate(
    samples: Sequence[TrainingSample],
    indices: Sequence[int],
    device: torch.device,
    collate_context: ContextCollate = pad_contexts,
) -> Batch:
    """Stack samples of one bucket; contexts through the backbone adapter's `collate_context`.

    On CUDA the latents are stacked into pinned memory and both tensors are copied without blocking.
    """
    latents = _joined([sample.latents.float() for sample in samples], device, stack=True)
    return Batch(
        latents=to_device(latents, device),
        context=to_device(collate_context([sample.context for sample in samples]), device),
        indices=tuple(int(index) for index in indices),
        captions=tuple(sample.caption for sample in samples),
    )


@dataclass
class StepDraws:
    """`sigmas` `[B, F]`, noise `eps` `[B, C, F, H, W]` and `loss_mask` `[B, F]` (False at held frames)."""

    sigmas: torch.Tensor
    eps: torch.Tensor
    loss_mask: torch.Tensor


def draw_for_batch(
    ptss: PTSS,
    latents_shape: torch.Size,
    indices: Sequence[int],
    seed: int,
    step: int,
    micro_step: int,
    device: torch.device,
) -> StepDraws:
    """Each sample's PTSS draw then its standard-normal noise, from its own keyed CPU generator."""
    _, channels, frames, height, width = latents_shape
    sigmas, eps, held = [], [], []
    for index in indices:
        generator = torch.Generator().manual_seed(draw_seed(seed, step, micro_step, index))
        drawn = ptss.draw(1, frames, generator)
        sigmas.append(drawn.sigmas)
        held.append(drawn.held)
        eps.append(torch.randn((1, channels, frames, height, width), generator=generator))
    return StepDraws(
        sigmas=to_device(torch.cat(sigmas), device),
        eps=to_device(_joined(eps, device, stack=False), device),
        loss_mask=to_device(~torch.cat(held), device),
    )


FrameWeighting = Callable[[torch.Tensor], torch.Tensor] | None


def frame_weighting(name: str, ptss: PTSS) -> FrameWeighting:
    """The per-frame weight function of a config's ``loss.frame_weighting``, with mean 1 under `ptss`'s law."""
    return normalised_frame_weights(bsmntw_weights, ptss) if name == "bsmntw" else None


def frame_loss_terms(
    model: Callable[..., torch.Tensor],
    batch: Batch,
    draws: StepDraws,
    *,
    weighting: FrameWeighting = None,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise and predict (`pusa_fw.fafm.fafm_forward`), compare: per-frame loss terms `[B, F]` (weighted, zero
    where masked) and raw losses.

    Args:
        model: the (possibly wrapped) DiT, called as ``model(noised, sigmas, context)``.
        batch: the clean latents and contexts.
        draws: the sigmas, noise and loss mask of this batch.
        weighting: per-frame weights as a function of the sigmas (e.g. BSMNTW), or None.
        autocast_dtype: run the forward under autocast to this dtype (bf16), weights staying fp32.

    Returns:
        ``terms`` `[B, F]` float32 (differentiable) and ``losses`` `[B, F]` float32, the unweighted
        per-frame MSE (detached, for logging).
    """
    x0 = batch.latents
    prediction = fafm_forward(model, x0, draws.eps, draws.sigmas, batch.context, autocast_dtype=autocast_dtype)
    losses = frame_losses(prediction.float(), x0, draws.eps)
    terms = losses if weighting is None else losses * weighting(draws.sigmas)
    terms = terms * draws.loss_mask.to(terms.dtype)
    return terms, losses.detach()
