"""Sequence parallelism of the Wan DiT by whole latent frames.

The N ranks of a group each take ``ceil(F / N)`` consecutive latent frames (the last ranks' slices are
padded with zero frames when F does not divide by N). A frame's tokens, its time embedding `[B, D]` and
its six modulation vectors `[B, 6, D]` stay on the rank that holds the frame: nothing per-token is built
for another rank, and the per-frame tensors are sliced, never gathered. RoPE is built for the local
frames at their global positions. Self-attention swaps sequence shards for head shards (Ulysses
all-to-all, `ulysses.py`), drops the padded frames so every head attends over exactly the F real frames,
and swaps back; cross-attention, the FFN and the head stay local. The velocity frames are gathered at the
end, so every rank returns the full `[B, C, F, H, W]` output, equal to the single-process one.

Use `enable_sequence_parallel(model, group)`; `disable_sequence_parallel(model)` undoes it.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from pusa_fw.errors import InputError

from pusa_fw_wan.parallel.ulysses import CommStats, check_heads, heads_to_sequence, sequence_to_heads
from pusa_fw_wan.dit.storage import compute_dtype_of

__all__ = [
    "SequenceParallel",
    "check_frames",
    "disable_sequence_parallel",
    "enable_sequence_parallel",
    "frame_ranges",
]


def frame_ranges(frames: int, size: int) -> list[range]:
    """The real latent frames each of ``size`` ranks holds: ``ceil(frames / size)`` consecutive slots each.

    A rank's slots past frame ``frames - 1`` are zero padding (its range is shorter, possibly empty).

    Returns:
        One `range` per rank, in rank order; together they cover ``0 .. frames - 1`` once, in order.
    """
    per_rank = math.ceil(frames / size)
    return [range(min(rank * per_rank, frames), min((rank + 1) * per_rank, frames)) for rank in range(size)]


def check_frames(num_latent_frames: int, size: int) -> None:
    """Raise `InputError` when a group of ``size`` ranks has more ranks than latent frames."""
    if num_latent_frames < size:
        raise InputError(
            f"--ulysses {size} is more ranks than the {num_latent_frames} latent frames of the window; "
            f"use --ulysses <= {num_latent_frames} or more frames"
        )


class SequenceParallel:
    """The frame sharding of one sequence-parallel group, shared by a DiT and its self-attentions.

    Args:
        group: the process group of the sequence-parallel ranks (a `DeviceMesh` dimension's group).
        stats: optional `CommStats` accumulating all-to-all bytes and time (benchmarks).

    Attributes:
        size: N, the ranks in the group; rank: this rank's index in it.
        frames: F of the current forward (set by `begin`); frames_per_rank: ``ceil(F / N)``.
    """

    def __init__(self, group: dist.ProcessGroup, stats: CommStats | None = None) -> None:
        self.group = group
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.stats = stats
        self.frames = 0
        self.frames_per_rank = 0
        self.tokens_per_frame = 0

    def begin(self, frames: int, tokens_per_frame: int, num_heads: int) -> None:
        """Fix the layout of one forward pass (F latent frames of ``tokens_per_frame`` tokens each).

        Raises:
            InputError: more ranks than frames, or heads not divisible by the ranks.
        """
        check_heads(num_heads, self.size)
        check_frames(frames, self.size)
        self.frames = frames
        self.frames_per_rank = math.ceil(frames / self.size)
        self.tokens_per_frame = tokens_per_frame

    @property
    def first_frame(self) -> int:
        """Global index of this rank's first (possibly padded) frame."""
        return self.rank * self.frames_per_rank

    def local_frames(self, tensor: torch.Tensor, dim: int) -> torch.Tensor:
        """This rank's ``frames_per_rank`` frames of a per-frame tensor, zero-padded past frame F.

        Args:
            tensor: F frames along ``dim`` (e.g. latents `[B, C, F, H, W]` with dim=2, or the time
                projection `[B, F, 6, D]` with dim=1).
            dim: the frame axis.

        Returns:
            The same tensor with ``frames_per_rank`` frames along ``dim``.
        """
        mine = frame_ranges(self.frames, self.size)[self.rank]
        local = tensor.narrow(dim, mine.start, len(mine))
        missing = self.frames_per_rank - len(mine)
        if missing:
            padding = [0, 0] * (tensor.ndim - 1 - dim) + [0, missing]
            local = F.pad(local, padding)
        return local

    def gather_frames(self, local: torch.Tensor, dim: int) -> torch.Tensor:
        """Concatenate every rank's frames along ``dim`` and drop the padding: the full F frames."""
        if torch.is_grad_enabled() and local.requires_grad:
            from torch.distributed.nn.functional import all_gather

            pieces = list(all_gather(local.contiguous(), group=self.group))
        else:
            pieces = [torch.empty_like(local) for _ in range(self.size)]
            dist.all_gather(pieces, local.contiguous(), group=self.group)
        return torch.cat(pieces, dim=dim).narrow(dim, 0, self.frames)

    def attention(
        self, module: nn.Module, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """Self-attention of a `SelfAttention` module over the whole sequence, heads split across ranks.

        Args:
            module: the `SelfAttention` (its ``_scaled_dot_product`` and ``_project_out`` are used).
            queries: `[B, L_local, H, head_dim]` after RoPE (global positions).
            keys: `[B, L_local, H, head_dim]` after RoPE.
            values: `[B, L_local, H, head_dim]`.

        Returns:
            `[B, L_local, D]` after the output projection.
        """
        compute_dtype = compute_dtype_of(module.v)
        stacked = torch.stack([queries.to(compute_dtype), keys.to(compute_dtype), values.to(compute_dtype)])
        gathered = sequence_to_heads(stacked, self.group, self.stats)
        real_tokens = self.frames * self.tokens_per_frame
        padded_tokens = gathered.shape[2]
        real = gathered.narrow(2, 0, real_tokens)
        attended = module._scaled_dot_product(real[0], real[1], real[2])
        if padded_tokens > real_tokens:
            attended = F.pad(attended, (0, 0, 0, 0, 0, padded_tokens - real_tokens))
        local = heads_to_sequence(attended, self.group, self.stats)
        return module._project_out(local)


def _self_attentions(model: nn.Module) -> list[nn.Module]:
    from pusa_fw_wan.dit.attention import SelfAttention

    return [module for module in model.modules() if isinstance(module, SelfAttention)]


def enable_sequence_parallel(
    model: nn.Module, group: dist.ProcessGroup, stats: CommStats | None = None
) -> SequenceParallel:
    """Make ``model`` (a `WanDiT`) run sequence-parallel over ``group`` (in place; weights untouched).

    Every rank of the group must call the model with the same inputs; each returns the full velocity.

    Returns:
        The `SequenceParallel` installed on the model and its self-attentions.

    Raises:
        InputError: the model is not a WanDiT, or its heads do not divide by the group size.
    """
    from pusa_fw_wan.dit.model import WanDiT

    if not isinstance(model, WanDiT):
        raise InputError(f"sequence parallelism needs a WanDiT, got {type(model).__name__}")
    shard = SequenceParallel(group, stats)
    check_heads(model.config.num_heads, shard.size)
    model.sequence_parallel = shard
    for attention in _self_attentions(model):
        attention.sequence_parallel = shard
    return shard


def disable_sequence_parallel(model: nn.Module) -> None:
    """Return ``model`` to single-process execution."""
    model.sequence_parallel = None
    for attention in _self_attentions(model):
        attention.sequence_parallel = None
