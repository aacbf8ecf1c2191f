"""Ulysses all-to-all: switch attention inputs between sequence shards and head shards.

With N ranks in a sequence-parallel group, each rank holds a contiguous slice of ``L_local`` tokens with
all H heads. `sequence_to_heads` gives every rank the whole (padded) sequence for H / N heads; attention
then runs locally per head; `heads_to_sequence` sends the results back to the ranks that own the tokens.
Rank r always holds head group r (heads ``r * H/N .. (r + 1) * H/N - 1``) and token slice r.

Under autograd the differentiable collective of `torch.distributed.nn` is used (training with sequence
parallelism); in inference the plain `all_to_all_single`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from einops import rearrange

from pusa_fw.errors import InputError

__all__ = ["CommStats", "check_heads", "heads_to_sequence", "sequence_to_heads", "valid_sizes"]


@dataclass
class CommStats:
    """Bytes each rank sent to other ranks, and seconds spent in collectives (accumulated).

    ``sent_bytes`` counts the (N - 1) / N of each all-to-all buffer that leaves the rank.
    """

    sent_bytes: int = 0
    seconds: float = 0.0
    calls: int = 0

    def reset(self) -> None:
        """Zero every counter."""
        self.sent_bytes, self.seconds, self.calls = 0, 0.0, 0


def valid_sizes(num_heads: int) -> list[int]:
    """Sequence-parallel sizes that divide ``num_heads`` (e.g. 40 heads: 1, 2, 4, 5, 8, 10, 20, 40)."""
    return [size for size in range(1, num_heads + 1) if num_heads % size == 0]


def check_heads(num_heads: int, size: int) -> None:
    """Raise `InputError` unless ``size`` divides ``num_heads``, naming the valid sizes."""
    if num_heads % size:
        raise InputError(
            f"--ulysses {size} does not divide the model's {num_heads} attention heads; "
            f"use one of {valid_sizes(num_heads)}"
        )


def _all_to_all(send: torch.Tensor, group: dist.ProcessGroup, stats: CommStats | None) -> torch.Tensor:
    """All-to-all over dim 0 (chunk i goes to rank i; chunk i of the result came from rank i)."""
    started = time.perf_counter()
    if torch.is_grad_enabled() and send.requires_grad:
        from torch.distributed.nn.functional import all_to_all_single

        received = all_to_all_single(torch.empty_like(send), send, group=group)
    else:
        received = torch.empty_like(send)
        dist.all_to_all_single(received, send, group=group)
    if stats is not None:
        size = dist.get_world_size(group)
        stats.sent_bytes += send.numel() * send.element_size() * (size - 1) // size
        stats.seconds += time.perf_counter() - started
        stats.calls += 1
    return received


def sequence_to_heads(
    stacked: torch.Tensor, group: dist.ProcessGroup, stats: CommStats | None = None
) -> torch.Tensor:
    """Sequence shards to head shards, for several tensors in one collective.

    Args:
        stacked: `[T, B, L_local, H, head_dim]` (e.g. T = 3 for q, k, v) on this rank's tokens.
        group: the sequence-parallel group of N ranks (H divisible by N).
        stats: optional accumulator of bytes and time.

    Returns:
        `[T, B, N * L_local, H / N, head_dim]`: every rank's tokens, in rank order, for this rank's heads.
    """
    size = dist.get_world_size(group)
    send = rearrange(stacked, "t b l (n h) d -> n t b l h d", n=size).contiguous()
    received = _all_to_all(send, group, stats)
    return rearrange(received, "n t b l h d -> t b (n l) h d")


def heads_to_sequence(
    attended: torch.Tensor, group: dist.ProcessGroup, stats: CommStats | None = None
) -> torch.Tensor:
    """Head shards back to sequence shards (the inverse of `sequence_to_heads` for one tensor).

    Args:
        attended: `[B, N * L_local, H / N, head_dim]`, this rank's heads over the whole sequence.
        group: the sequence-parallel group.
        stats: optional accumulator of bytes and time.

    Returns:
        `[B, L_local, H, head_dim]`: this rank's tokens with all heads.
    """
    size = dist.get_world_size(group)
    send = rearrange(attended, "b (n l) h d -> n b l h d", n=size).contiguous()
    received = _all_to_all(send, group, stats)
    return rearrange(received, "n b l h d -> b l (n h) d")
