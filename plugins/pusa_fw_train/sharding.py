"""Per-rank shares of a global batch, and the loss that makes many ranks equal one process.

The trainer draws the sample order (seeded, identical on every rank) and cuts it into global batches;
every rank therefore sees the same number of global batches and runs the same number of steps, whatever
the sample count. `shard_global_batch` gives each rank an equal share of one global batch: when the
batch does not divide by the world size, the short ranks are padded with a copy of a sample of the same
batch (same bucket, same shape) whose loss weight is 0. `global_mean_loss` then scales each rank's
summed loss so that the mean over ranks (DDP's gradient all-reduce, FSDP2's reduce-scatter) is exactly
the single-process mean over the real samples of the global batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pusa_fw.errors import InputError

__all__ = ["RankShard", "global_mean_loss", "shard_global_batch"]


@dataclass(frozen=True)
class RankShard:
    """One rank's share of a global batch.

    Attributes:
        indices: sample indices this rank loads, ``ceil(N / world_size)`` of them on every rank.
        is_real: False for padding entries (copies whose loss must not count).
        global_size: N, the number of real samples in the global batch.
        world_size: number of ranks the batch was split over.
    """

    indices: tuple[int, ...]
    is_real: tuple[bool, ...]
    global_size: int
    world_size: int

    @property
    def num_real(self) -> int:
        """How many of this rank's samples count in the loss."""
        return sum(self.is_real)

    def real_mask(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """`[b]` bool, True for the samples that count."""
        return torch.tensor(self.is_real, dtype=torch.bool, device=device)

    def sample_weights(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """`[b]` float32 weights: ``world_size / N`` for a real sample, 0 for padding.

        ``(per_sample_loss * weights).sum()`` on every rank, averaged over ranks, is the mean of the
        per-sample losses over the global batch.
        """
        scale = self.world_size / self.global_size
        return self.real_mask(device).to(torch.float32) * scale


def shard_global_batch(indices: Sequence[int], rank: int, world_size: int) -> RankShard:
    """Split one global batch of sample indices over ``world_size`` ranks (rank r takes r, r+W, ...).

    Args:
        indices: the global batch, identical on every rank (N >= 1 samples of one bucket).
        rank: this rank.
        world_size: number of ranks.

    Returns:
        This rank's `RankShard` (every rank gets ``ceil(N / W)`` entries; a short rank is padded with the
        batch's first sample, marked not real).

    Raises:
        InputError: an empty batch or a rank outside ``0 .. world_size - 1``.
    """
    indices = [int(index) for index in indices]
    if not indices:
        raise InputError("a global batch needs at least one sample index")
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError(f"rank {rank} is not in 0..{world_size - 1} (world size {world_size})")
    per_rank = -(-len(indices) // world_size)
    mine = indices[rank::world_size]
    padding = per_rank - len(mine)
    return RankShard(
        indices=tuple(mine + [indices[0]] * padding),
        is_real=tuple([True] * len(mine) + [False] * padding),
        global_size=len(indices),
        world_size=world_size,
    )


def global_mean_loss(
    terms: torch.Tensor,
    shard: RankShard,
    counted: torch.Tensor | None = None,
) -> torch.Tensor:
    """This rank's loss such that the mean over ranks is the single-process mean over the global batch.

    With ``terms`` the per-frame loss terms (`pusa_fw.fafm.fafm_loss(..., reduction="none")`, zero where
    masked) and ``counted`` the frames that count, the single-process loss is
    ``sum(terms) / sum(counted)`` over the global batch. Each rank returns
    ``sum(own real terms) * world_size / global_count``, where the global count of counted frames is
    all-reduced (a small collective, only when world_size > 1) and stays on the device: nothing here
    reads a value on the host, so the backward is enqueued without waiting for the forward.

    Args:
        terms: `[b, F]` (or `[b]`) per-sample loss terms of this rank's samples, in shard order.
        shard: this rank's `RankShard` (padding rows are dropped).
        counted: `[b, F]` (or `[b]`) bool of counted entries; None = all count.

    Returns:
        float32 scalar, differentiable in ``terms``.
    """
    if terms.shape[0] != len(shard.indices):
        raise InputError(
            f"loss terms have {terms.shape[0]} rows but the shard has {len(shard.indices)} samples"
        )
    real = _real_rows(shard, terms.device).reshape(-1, *([1] * (terms.ndim - 1)))
    if counted is None:
        counted = torch.ones_like(terms, dtype=torch.bool)
    counted = counted.to(terms.device) & real
    local_sum = torch.where(counted, terms, torch.zeros_like(terms)).sum(dtype=torch.float32)
    count = counted.sum().to(torch.float64).reshape(1)
    if shard.world_size > 1:
        if not dist.is_initialized():
            raise InputError(f"the shard is for {shard.world_size} ranks but no process group is running")
        dist.all_reduce(count)
    _check_counted(count)
    # world / count in float64, rounded once to float32: what multiplying by the Python float did
    scale = (shard.world_size / count).to(torch.float32).reshape(())
    return local_sum * scale


def _real_rows(shard: RankShard, device: torch.device) -> torch.Tensor:
    """`[b]` bool of the shard's real rows, made on `device` (padding trails, as `shard_global_batch` puts it)."""
    num_real = shard.num_real
    if shard.is_real != (True,) * num_real + (False,) * (len(shard.is_real) - num_real):
        return shard.real_mask(device)  # a hand-made shard with padding in between: copy the mask over
    return torch.arange(len(shard.is_real), device=device) < num_real


def _check_counted(count: torch.Tensor) -> None:
    """Refuse a global batch whose every frame is masked, without reading the count on the host.

    On the CPU the check raises `InputError` at once; on CUDA it is a device-side assert that fails the
    run at the next synchronisation (the trainer cannot reach it: PTSS never holds every frame).
    """
    message = "no frame of the global batch counts in the loss; keep at least one frame unmasked"
    try:
        torch._assert_async(count.reshape(()) > 0, message)
    except RuntimeError:
        raise InputError(message) from None
