"""Attention of the Wan2.1 DiT: the q/k RMSNorm, self-attention with 3D RoPE and cross-attention to the text.

Module and parameter names equal the official ``wan/modules/model.py`` ones. The projections and SDPA run
in the dtype of their weights (their compute dtype when stored low-precision, `pusa_fw_wan.dit.storage`),
or in the autocast dtype under autocast (which would cast them to it for the GEMM anyway); RoPE runs in
float64 or float32 (see `rope.py`). Self-attention casts its float32 input once for q, k and v (outside
autograd; with gradients on each projection casts it, so the three input gradients add in float32).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from pusa_fw_wan.dit.low_precision import autocast_dtype
from pusa_fw_wan.dit.rope import apply_rope
from pusa_fw_wan.dit.storage import compute_dtype_of

__all__ = ["CrossAttention", "RMSNorm", "SelfAttention", "input_dtype", "linear_in_weight_dtype"]


class RMSNorm(nn.Module):
    """RMS norm over the full width (across heads), with a learnable weight (official ``WanRMSNorm``).

    The statistic is computed in float32; the result is cast back to the input dtype and multiplied by
    the weight, so a float32 weight gives a float32 output.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[..., D]` -> `[..., D]`."""
        x32 = x.float()
        # One reduction pass (no [..., D] square temporary): mean(x^2) = ||x||^2 / D.
        mean_square = torch.linalg.vector_norm(x32, dim=-1, keepdim=True).square() / x.shape[-1]
        normed = (x32 * torch.rsqrt(mean_square + self.eps)).to(x.dtype)
        if torch.is_grad_enabled() or normed.dtype != self.weight.dtype:
            return normed * self.weight  # bf16 input * fp32 weight gives fp32 q/k, as in the official code
        return normed.mul_(self.weight)


def input_dtype(linear: nn.Module, x: torch.Tensor) -> torch.dtype:
    """The dtype ``linear``'s GEMM of ``x`` runs in: the autocast dtype under autocast, else its compute
    dtype (its weight's, unless stored low-precision)."""
    return autocast_dtype(x.device.type) or compute_dtype_of(linear)


def linear_in_weight_dtype(linear: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply ``linear`` to ``x`` cast to the dtype its GEMM runs in (`input_dtype`)."""
    return linear(x.to(input_dtype(linear, x)))


class _Attention(nn.Module):
    """The q/k/v/o projections and q/k norms shared by self- and cross-attention."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q: nn.Module = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k: nn.Module = RMSNorm(dim, eps) if qk_norm else nn.Identity()

    def _attend(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Softmax attention through SDPA in the dtype of the value projection, then ``o``.

        Args:
            queries: `[B, Lq, heads, head_dim]`.
            keys: `[B, Lk, heads, head_dim]`.
            values: `[B, Lk, heads, head_dim]`.

        Returns:
            `[B, Lq, D]` after the output projection ``o`` (dtype of ``o``'s weight).
        """
        return self._project_out(self._scaled_dot_product(queries, keys, values))

    def _scaled_dot_product(
        self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """SDPA per head in the dtype of the value projection: `[B, Lq, heads, head_dim]` out."""
        compute_dtype = compute_dtype_of(self.v)
        attended = F.scaled_dot_product_attention(
            rearrange(queries.to(compute_dtype), "b l h d -> b h l d"),
            rearrange(keys.to(compute_dtype), "b l h d -> b h l d"),
            rearrange(values.to(compute_dtype), "b l h d -> b h l d"),
        )
        return rearrange(attended, "b h l d -> b l h d")

    def _project_out(self, attended: torch.Tensor) -> torch.Tensor:
        """The output projection ``o`` of `[B, L, heads, head_dim]` heads: `[B, L, D]`."""
        return linear_in_weight_dtype(self.o, rearrange(attended, "b l h d -> b l (h d)"))


class SelfAttention(_Attention):
    """Self-attention over all tokens with RMS-normed q/k and 3D RoPE.

    ``sequence_parallel`` (None unless `pusa_fw_wan.parallel.enable_sequence_parallel` set it) holds
    this rank's frame shard: x then carries only the local tokens and the attention runs over the whole
    sequence through a Ulysses all-to-all.
    """

    sequence_parallel: Any = None

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        """Args: x `[B, L, D]`; rope `[L, head_dim / 2]` complex128 or complex64. Returns `[B, L, D]`."""
        queries, keys, values = self.project(x, rope)
        if self.sequence_parallel is not None:
            return self.sequence_parallel.attention(self, queries, keys, values)
        return self._attend(queries, keys, values)

    def project(self, x: torch.Tensor, rope: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of the tokens ``x`` (RMS-normed, RoPE applied to queries and keys).

        Args:
            x: `[B, L, D]` tokens.
            rope: `[L, head_dim / 2]` complex128 or complex64 rotations of those tokens.

        Returns:
            queries and keys `[B, L, heads, head_dim]` float32, values `[B, L, heads, head_dim]` in the dtype
            of the value projection.
        """
        if not (torch.is_grad_enabled() and x.requires_grad):
            x = x.to(input_dtype(self.q, x))  # once for q, k and v (their own casts are then no-ops)
        queries = self.norm_q(linear_in_weight_dtype(self.q, x))
        keys = self.norm_k(linear_in_weight_dtype(self.k, x))
        values = linear_in_weight_dtype(self.v, x)
        split = "b l (h d) -> b l h d"
        queries = apply_rope(rearrange(queries, split, h=self.num_heads), rope)
        keys = apply_rope(rearrange(keys, split, h=self.num_heads), rope)
        values = rearrange(values, split, h=self.num_heads)
        return queries, keys, values


class CrossAttention(_Attention):
    """Cross-attention from video tokens to all text rows (no mask, no RoPE)."""

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Args: x `[B, L, D]`; context `[B, Lt, D]` embedded text. Returns `[B, L, D]`."""
        split = "b l (h d) -> b l h d"
        queries = rearrange(self.norm_q(linear_in_weight_dtype(self.q, x)), split, h=self.num_heads)
        keys = rearrange(self.norm_k(linear_in_weight_dtype(self.k, context)), split, h=self.num_heads)
        values = rearrange(linear_in_weight_dtype(self.v, context), split, h=self.num_heads)
        return self._attend(queries, keys, values)
