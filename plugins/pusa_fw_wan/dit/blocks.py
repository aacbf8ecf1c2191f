"""Building blocks of the Wan2.1 DiT: norms, the transformer block and the output head (attention.py: attention).

Module and parameter names equal the official ``wan/modules/model.py`` ones, so a state dict of the
released checkpoints loads by name. Time conditioning enters per *frame*: a block receives the time
projection as `[B, F, 6, D]` and broadcasts it over each frame's tokens by viewing the token axis as
`[F, tokens_per_frame]`; no per-token time tensor is ever built.

Precision (as the official code under bf16 autocast): the residual stream, every norm, the modulation
arithmetic and the head run in float32; the q/k/v/o and FFN linears and attention run in the dtype of
their weights; RoPE runs in float64 (see `rope.py`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from pusa_fw_wan.dit.attention import CrossAttention, RMSNorm, SelfAttention, linear_in_weight_dtype

__all__ = [
    "AttentionBlock",
    "CrossAttention",
    "Head",
    "RMSNorm",
    "SelfAttention",
    "layer_norm_fp32",
    "modulate",
    "timestep_sinusoid",
]


def timestep_sinusoid(timesteps: torch.Tensor, freq_dim: int) -> torch.Tensor:
    """Sinusoidal embedding of Wan network timesteps (0..1000 scale), in float64.

    ``cat([cos(t * w_i), sin(t * w_i)])`` with ``w_i = 10000 ** (-i / half)``, ``i = 0 .. half - 1``.

    Args:
        timesteps: `[N]` network timesteps (cast to float64 first).
        freq_dim: embedding width (even).

    Returns:
        `[N, freq_dim]` float64.
    """
    half = freq_dim // 2
    positions = timesteps.to(torch.float64)
    frequencies = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=positions.device) / half)
    angles = torch.outer(positions, frequencies)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def layer_norm_fp32(x: torch.Tensor, eps: float, norm: nn.LayerNorm | None = None) -> torch.Tensor:
    """LayerNorm over the last axis in float32, optionally with the affine weights of ``norm``.

    Args:
        x: `[..., D]` any float dtype.
        eps: the norm epsilon.
        norm: an affine `nn.LayerNorm` whose weight and bias are applied, or None for no affine.

    Returns:
        `[..., D]` float32.
    """
    weight = None if norm is None else norm.weight.float()
    bias = None if norm is None else norm.bias.float()
    return F.layer_norm(x.float(), (x.shape[-1],), weight, bias, eps)


def modulate(normed: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``normed * (1 + scale) + shift`` in float32, broadcasting per-frame values over tokens.

    Computed as ``(normed + normed * scale) + shift`` so that the only full-size tensor allocated is the
    result (an out-of-place op whose first operand is the broadcast `[B, F, 1, D]` shift would first copy
    it out to `[B, F, S, D]`).

    Args:
        normed: `[B, F, S, D]` float32 normalised tokens (S tokens per frame).
        shift: `[B, F, 1, D]` float32.
        scale: `[B, F, 1, D]` float32.

    Returns:
        `[B, F, S, D]` float32.
    """
    return torch.addcmul(normed, normed, scale).add_(shift)


class AttentionBlock(nn.Module):
    """One Wan2.1 transformer block: modulated self-attention, cross-attention, modulated gated FFN.

    ``modulation`` `[1, 6, D]` is the block's learned bias on the shared time projection; its six rows
    are shift/scale/gate of self-attention and shift/scale/gate of the FFN.
    """

    def __init__(
        self, dim: int, ffn_dim: int, num_heads: int, qk_norm: bool, cross_attn_norm: bool, eps: float
    ) -> None:
        super().__init__()
        self.eps = eps
        self.self_attn = SelfAttention(dim, num_heads, qk_norm, eps)
        self.norm3: nn.Module = (
            nn.LayerNorm(dim, eps=eps, elementwise_affine=True) if cross_attn_norm else nn.Identity()
        )
        self.cross_attn = CrossAttention(dim, num_heads, qk_norm, eps)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim)
        )
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)
        # > 1: with gradients on, cross-attention and the FFN run over this many groups of whole frames,
        # each checkpointed (`WanDiT.enable_gradient_checkpointing`); 1: one pass (inference always).
        self.token_chunks = 1

    def forward(
        self,
        x: torch.Tensor,
        time_projection: torch.Tensor,
        context: torch.Tensor,
        rope: torch.Tensor,
        attention: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Run the block.

        Args:
            x: `[B, L, D]` float32 residual stream, L = F * tokens_per_frame, frame-major.
            time_projection: `[B, F, 6, D]` float32 time projection of each frame (may be an expanded
                view with stride 0 over F).
            context: `[B, Lt, D]` embedded text.
            rope: `[L, head_dim / 2]` complex128 token rotations (`rope.rope_frequencies`).
            attention: replaces ``self_attn(tokens, rope)`` (`[B, L, D]` modulated tokens in, `[B, L, D]`
                out); partial computation (`pusa_fw_wan.dit.partial`) attends to cached keys and values
                through it. None: the block's own self-attention.

        Returns:
            `[B, L, D]` float32.
        """
        frames = time_projection.shape[1]
        modulation = self.modulation.float().unsqueeze(0) + time_projection
        shift_msa, scale_msa, gate_msa, shift_ffn, scale_ffn, gate_ffn = modulation.unsqueeze(3).unbind(dim=2)

        def per_frame(tokens: torch.Tensor) -> torch.Tensor:
            return rearrange(tokens, "b (f s) d -> b f s d", f=frames)

        def per_token(tokens: torch.Tensor) -> torch.Tensor:
            return rearrange(tokens, "b f s d -> b (f s) d")

        x_frames = per_frame(x)
        attn_in = modulate(layer_norm_fp32(x_frames, self.eps), shift_msa, scale_msa)
        if attention is None:
            attn_out = self.self_attn(per_token(attn_in), rope).float()
        else:
            attn_out = attention(per_token(attn_in)).float()
        x_frames = torch.addcmul(x_frames, per_frame(attn_out), gate_msa)
        del attn_in, attn_out  # two dead fp32 [B, L, D] tensors (inference) not held through the FFN peak

        x = per_token(x_frames)
        chunked = self.token_chunks > 1 and torch.is_grad_enabled()
        if chunked:
            x = x + per_token(self._checkpointed_chunks(self._cross_branch, per_frame(x), context))
        else:
            x = x + self._cross_branch(x, context)

        x_frames = per_frame(x)
        if chunked:
            ffn_out = self._checkpointed_chunks(self._ffn_branch, x_frames, shift_ffn, scale_ffn)
        else:
            ffn_out = self._ffn_branch(x_frames, shift_ffn, scale_ffn)
        x_frames = torch.addcmul(x_frames, ffn_out, gate_ffn)
        return per_token(x_frames)

    def _cross_branch(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Cross-attention of tokens to the whole text, float32: `[B, l, D]` or `[B, f, S, D]` in and out.

        Args:
            x: the residual stream of the tokens (per token, or per frame for a group of frames).
            context: `[B, Lt, D]` embedded text.
        """
        shape = x.shape
        tokens = rearrange(x, "b f s d -> b (f s) d") if x.ndim == 4 else x
        norm3 = self.norm3 if isinstance(self.norm3, nn.LayerNorm) else None
        cross_in = layer_norm_fp32(tokens, self.eps, norm3) if norm3 is not None else tokens
        return self.cross_attn(cross_in, context).float().reshape(shape)

    def _ffn_branch(self, x_frames: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The modulated FFN of some frames: `[B, f, S, D]` float32 in, `[B, f, S, D]` float32 out.

        Args:
            x_frames: `[B, f, S, D]` residual stream of f frames.
            shift: `[B, f, 1, D]` float32, the FFN shift of those frames.
            scale: `[B, f, 1, D]` float32.
        """
        frames = x_frames.shape[1]
        ffn_in = modulate(layer_norm_fp32(x_frames, self.eps), shift, scale)
        hidden = linear_in_weight_dtype(self.ffn[0], rearrange(ffn_in, "b f s d -> b (f s) d"))
        if torch.is_grad_enabled():
            hidden = self.ffn[1](hidden)
        else:  # inference: reuse the [B, L, ffn_dim] buffer (the largest activation of the block)
            hidden = torch.ops.aten.gelu_(hidden, approximate=self.ffn[1].approximate)
        ffn_out = linear_in_weight_dtype(self.ffn[2], hidden).float()
        return rearrange(ffn_out, "b (f s) d -> b f s d", f=frames)

    def _checkpointed_chunks(
        self, branch: Callable[..., torch.Tensor], x_frames: torch.Tensor, *others: torch.Tensor
    ) -> torch.Tensor:
        """A per-token `branch` over ``token_chunks`` groups of whole frames, each checkpointed on its own.

        The backward then holds the branch's activations (for the FFN: `[L, ffn_dim]` in several forms and
        the float32 norm and modulation of its input) of one group of frames at a time instead of all of
        them, for one more forward of the branch. Rows are computed in smaller matmuls, so gradients may
        differ from one pass in the last bits.

        Args:
            branch: `_cross_branch` or `_ffn_branch`.
            x_frames: `[B, F, S, D]` residual stream.
            others: the branch's other arguments; per-frame ones (`[B, F, 1, D]`) are split with the
                frames, the rest (the text `[B, Lt, D]`) is given whole to every group.

        Returns:
            `[B, F, S, D]` float32.
        """
        frames = x_frames.shape[1]
        size = -(-frames // self.token_chunks)
        outputs = []
        for start in range(0, frames, size):
            group = slice(start, start + size)
            arguments = [other[:, group] if other.ndim == 4 else other for other in others]
            outputs.append(checkpoint(branch, x_frames[:, group], *arguments, use_reentrant=False))
        return torch.cat(outputs, dim=1)


class Head(nn.Module):
    """Output head: LayerNorm modulated by the *time embedding* (not the projection), then a linear.

    ``modulation`` `[1, 2, D]` holds shift and scale; ``head`` maps D to ``out_dim * patch_volume``.
    Runs entirely in float32.
    """

    def __init__(self, dim: int, out_features: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.head = nn.Linear(dim, out_features)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, time_embedding: torch.Tensor) -> torch.Tensor:
        """Args: x `[B, L, D]` float32; time_embedding `[B, F, D]` float32. Returns `[B, L, out]` float32."""
        frames = time_embedding.shape[1]
        modulation = self.modulation.float().unsqueeze(0) + time_embedding.unsqueeze(2)
        shift, scale = modulation.unsqueeze(3).unbind(dim=2)
        x_frames = rearrange(x, "b (f s) d -> b f s d", f=frames)
        head_in = rearrange(
            modulate(layer_norm_fp32(x_frames, self.eps), shift, scale), "b f s d -> b (f s) d"
        )
        return linear_in_weight_dtype(self.head, head_in).float()
