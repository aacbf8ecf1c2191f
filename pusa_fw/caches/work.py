"""Work accounting: how much DiT work a sampling run actually did, against the same run without a cache.

Two measures, both summed over every backbone call (every step and guidance branch):

- **token-block evaluations**: query tokens sent through the blocks times the number of blocks. A full call
  on a window of W frames of T tokens each, batch B, on an L-block model counts ``B * W * T * L``; a
  partial call that computes Fc frames counts ``B * Fc * T * L``; a reused step counts 0.
- **FLOPs** (an estimate, multiply-add = 2): per block and sample, with Q query tokens (computed frames),
  K key tokens (the whole window: skipped frames attend through cached keys/values), X text tokens,
  width D and FFN width Dff::

      self-attention  q, k, v, o projections of the Q computed tokens   4 * 2 Q D^2
                      scores and weighted sum over K keys               2 * 2 Q K D
      cross-attention q, o projections of Q tokens                      2 * 2 Q D^2
                      k, v projections of the X text tokens             2 * 2 X D^2
                      scores and weighted sum over X keys               2 * 2 Q X D
      FFN             two linears                                       2 * 2 Q D Dff

  so attention's cost falls linearly with the query count while its keys stay the whole window. The
  patch embedding, time embedding and head are left out (under 1% at Wan sizes).

The reference ("no cache") is what the loop would have done: one full call per branch call. A run's
`WorkStats` holds both sums; its fractions are done / reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DiTShape", "WorkStats", "call_flops", "dit_shape_of"]


@dataclass(frozen=True)
class DiTShape:
    """The sizes the work estimate needs.

    Attributes:
        blocks: transformer blocks L.
        dim: width D.
        ffn_dim: FFN width Dff.
        text_tokens: text tokens X each block cross-attends to (0: no cross-attention).
        tokens_per_frame: tokens T of one latent frame.
    """

    blocks: int
    dim: int
    ffn_dim: int
    text_tokens: int
    tokens_per_frame: int


def dit_shape_of(backbone: Any, latents_shape: tuple[int, ...]) -> DiTShape:
    """The `DiTShape` of `backbone` for window latents of `latents_shape` `[B, C, W, H, W']`.

    A backbone with a Wan-like ``config`` (``num_layers``, ``dim``, ``ffn_dim``, ``text_len``,
    ``patch_size``) is measured from it; any other counts one block of width C with one token per latent
    pixel (token-block fractions are still exact ratios; FLOPs are then only relative).
    """
    config = getattr(backbone, "config", None)
    height, width = int(latents_shape[3]), int(latents_shape[4])
    needed = ("num_layers", "dim", "ffn_dim", "text_len", "patch_size")
    if config is not None and all(hasattr(config, name) for name in needed):
        _, patch_h, patch_w = config.patch_size
        return DiTShape(blocks=int(config.num_layers), dim=int(config.dim), ffn_dim=int(config.ffn_dim),
                        text_tokens=int(config.text_len),
                        tokens_per_frame=(height // patch_h) * (width // patch_w))
    channels = int(latents_shape[1])
    return DiTShape(blocks=1, dim=channels, ffn_dim=4 * channels, text_tokens=0, tokens_per_frame=height * width)


def call_flops(shape: DiTShape, batch: int, computed_frames: int, window_frames: int) -> float:
    """Estimated FLOPs of one call computing `computed_frames` of a `window_frames` window (module docstring)."""
    if computed_frames == 0:
        return 0.0
    d, x = shape.dim, shape.text_tokens
    queries = computed_frames * shape.tokens_per_frame
    keys = window_frames * shape.tokens_per_frame
    per_block = (8 * queries * d * d + 4 * queries * keys * d + 4 * queries * d * d + 4 * x * d * d
                 + 4 * queries * x * d + 4 * queries * d * shape.ffn_dim)
    return float(batch * shape.blocks * per_block)


@dataclass
class WorkStats:
    """DiT work of one sampling run, filled by the loop (pass one to `pusa_fw.sample(work=...)`).

    Attributes:
        token_blocks: token-block evaluations done.
        token_blocks_reference: the same run without a cache.
        flops: estimated FLOPs done.
        flops_reference: the same run without a cache.
        calls: backbone calls made (a partial call counts 1).
        calls_reference: branch calls the loop asked for.
        frames_computed: frame outputs computed, summed over calls.
        frames_reference: frame outputs of full calls.
        per_step: per step: ``[token_blocks, token_blocks_reference]`` (for plots and tests).
    """

    token_blocks: int = 0
    token_blocks_reference: int = 0
    flops: float = 0.0
    flops_reference: float = 0.0
    calls: int = 0
    calls_reference: int = 0
    frames_computed: int = 0
    frames_reference: int = 0
    per_step: dict[int, list[int]] = field(default_factory=dict)

    def record(self, step: int, shape: DiTShape, batch: int, computed_frames: int, window_frames: int) -> None:
        """Count one branch call of `step` that computed `computed_frames` of `window_frames` (0: reused)."""
        per_frame = batch * shape.tokens_per_frame * shape.blocks
        done, full = per_frame * computed_frames, per_frame * window_frames
        self.token_blocks += done
        self.token_blocks_reference += full
        self.flops += call_flops(shape, batch, computed_frames, window_frames)
        self.flops_reference += call_flops(shape, batch, window_frames, window_frames)
        self.calls += int(computed_frames > 0)
        self.calls_reference += 1
        self.frames_computed += batch * computed_frames
        self.frames_reference += batch * window_frames
        row = self.per_step.setdefault(step, [0, 0])
        row[0] += done
        row[1] += full

    @property
    def token_block_fraction(self) -> float:
        """Token-block evaluations done over the reference (1.0 for no cache; NaN before any call)."""
        return self.token_blocks / self.token_blocks_reference if self.token_blocks_reference else float("nan")

    @property
    def flop_fraction(self) -> float:
        """Estimated FLOPs done over the reference."""
        return self.flops / self.flops_reference if self.flops_reference else float("nan")

    def merge(self, other: WorkStats) -> WorkStats:
        """Add `other`'s counts into this one (e.g. over the batches of an evaluation); returns self."""
        for name in ("token_blocks", "token_blocks_reference", "flops", "flops_reference", "calls",
                     "calls_reference", "frames_computed", "frames_reference"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for step, (done, full) in other.per_step.items():
            row = self.per_step.setdefault(step, [0, 0])
            row[0] += done
            row[1] += full
        return self

    def summary(self) -> dict[str, Any]:
        """JSON-able totals and fractions."""
        return {"token_block_fraction": self.token_block_fraction, "flop_fraction": self.flop_fraction,
                "token_blocks": self.token_blocks, "token_blocks_reference": self.token_blocks_reference,
                "flops": self.flops, "flops_reference": self.flops_reference, "calls": self.calls,
                "calls_reference": self.calls_reference}
