"""3D rotary position embedding of the Wan2.1 DiT, in float64.

Each attention head of width ``head_dim`` holds ``head_dim / 2`` complex pairs (channels 2j, 2j+1). They
are split between the three grid axes as ``[c - 2 * (c // 3), c // 3, c // 3]`` pairs (frame, height,
width; 22/21/21 for head_dim 128), each axis with its own frequency ladder
``theta_j = 10000 ** (-2 j / d_axis)`` where ``d_axis`` is twice the axis' pair count. The token at grid
position (f, h, w) is rotated by ``f * theta_frame``, ``h * theta_height`` and ``w * theta_width``. Angles
are float64 and the rotation is a complex128 multiplication (as in the official code); the result is
returned in float32. Nothing here is a module parameter or a state-dict key.

Training uses the same table rounded to complex64 and rotates in float32 (`apply_rope` picks the
precision from the table's dtype): the float64 round trip of every query and key is an inference
nicety that a gradient step does not need. Inference can ask for the same (``WanDiT.rope_precision =
"float32"``, `ROPE_PRECISIONS`): on a 480p x 81 grid (21 x 30 x 52 tokens, head_dim 128) the float32
rotation differs from the float64 one by at most 2.6 float32 units (2^-24) of a channel pair's magnitude
(measured; 0.28 on average, relative Frobenius 4.7e-8; bounded by 8 units in
``tests/wan/test_rope_precision.py``), far below the bf16 rounding (2^-8) that q and k get before the
attention GEMM, and it halves RoPE's memory traffic. `cached_rope_frequencies` keeps the last few
tables, so a forward pass does not rebuild the table of a grid it has seen.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from einops import rearrange

__all__ = ["ROPE_PRECISIONS", "apply_rope", "cached_rope_frequencies", "rope_axis_pairs", "rope_frequencies"]

ROPE_PRECISIONS = ("float64", "float32")
"""Inference RoPE precisions of `WanDiT.rope_precision` (float64: the official reference; float32)."""

_THETA = 10000.0


def rope_axis_pairs(head_dim: int) -> tuple[int, int, int]:
    """Complex pairs per axis (frame, height, width) for a head of width ``head_dim``."""
    pairs = head_dim // 2
    return pairs - 2 * (pairs // 3), pairs // 3, pairs // 3


def _axis_angles(num_positions: int, num_pairs: int, device: torch.device) -> torch.Tensor:
    """Rotation angles of one axis.

    Returns:
        `[num_positions, num_pairs]` float64: ``position * 10000 ** (-2 j / (2 num_pairs))``.
    """
    axis_dim = 2 * num_pairs
    exponents = torch.arange(0, axis_dim, 2, dtype=torch.float64, device=device) / axis_dim
    inverse_frequencies = 1.0 / torch.pow(_THETA, exponents)
    positions = torch.arange(num_positions, dtype=torch.float64, device=device)
    return torch.outer(positions, inverse_frequencies)


def rope_frequencies(
    grid: tuple[int, int, int],
    head_dim: int,
    device: torch.device | str = "cpu",
    max_positions: int = 1024,
    first_frame: int = 0,
) -> torch.Tensor:
    """Unit complex rotation of every token and channel pair.

    Args:
        grid: (F, H, W) token grid after patchify; tokens are ordered frame-major, then height, then width.
        head_dim: width of one attention head (even).
        device: where to build the table.
        max_positions: largest extent per axis the official table covers (1024).
        first_frame: global frame position of the grid's first frame (a sequence-parallel rank builds
            the rows of its own frames only: positions ``first_frame .. first_frame + F - 1``).

    Returns:
        `[F * H * W, head_dim / 2]` complex128, ``exp(i * angle)``.

    Raises:
        ValueError: an axis is longer than ``max_positions``.
    """
    frames, height, width = grid
    if max(first_frame + frames, height, width) > max_positions:
        raise ValueError(f"token grid {grid} exceeds the RoPE table of {max_positions} positions per axis")
    device = torch.device(device)
    frame_pairs, height_pairs, width_pairs = rope_axis_pairs(head_dim)
    frame_angles = _axis_angles(first_frame + frames, frame_pairs, device)[first_frame:]
    height_angles = _axis_angles(height, height_pairs, device)
    width_angles = _axis_angles(width, width_pairs, device)
    angles = torch.cat(
        [
            frame_angles[:, None, None, :].expand(frames, height, width, frame_pairs),
            height_angles[None, :, None, :].expand(frames, height, width, height_pairs),
            width_angles[None, None, :, :].expand(frames, height, width, width_pairs),
        ],
        dim=-1,
    )
    angles = rearrange(angles, "f h w p -> (f h w) p")
    return torch.polar(torch.ones_like(angles), angles)


@lru_cache(maxsize=8)
def _cached_table(
    grid: tuple[int, int, int], head_dim: int, device: torch.device, max_positions: int, dtype: torch.dtype,
    first_frame: int,
) -> torch.Tensor:
    # Built outside any inference_mode / no_grad region, so a training step may save it for backward.
    with torch.inference_mode(False), torch.no_grad():
        return rope_frequencies(grid, head_dim, device, max_positions, first_frame).to(dtype)


def cached_rope_frequencies(
    grid: tuple[int, int, int],
    head_dim: int,
    device: torch.device | str = "cpu",
    max_positions: int = 1024,
    dtype: torch.dtype = torch.complex128,
    first_frame: int = 0,
) -> torch.Tensor:
    """`rope_frequencies` in ``dtype`` (complex128, or complex64 for training), from a small cache.

    ``first_frame`` is the global position of the grid's first frame (a sequence-parallel rank's
    frames). The returned tensor is shared between calls: never modify it in place.
    """
    if dtype not in (torch.complex128, torch.complex64):
        raise ValueError(f"RoPE tables are complex128 or complex64, got {dtype}")
    return _cached_table(tuple(grid), head_dim, torch.device(device), max_positions, dtype, first_frame)


def apply_rope(x: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs of every head by complex multiplication.

    A complex128 table rotates in complex128 (the official precision, used for inference); a complex64
    table rotates in complex64 (training), without converting the queries and keys to float64.

    Args:
        x: `[B, L, heads, head_dim]` queries or keys (any float dtype).
        frequencies: `[L, head_dim / 2]` complex128 or complex64 from `cached_rope_frequencies`.

    Returns:
        `[B, L, heads, head_dim]` float32.
    """
    if frequencies.dtype == torch.complex64:
        pairs = rearrange(x.float(), "b l h (p two) -> b l h p two", two=2).contiguous()
        rotated = torch.view_as_complex(pairs) * rearrange(frequencies, "l p -> 1 l 1 p")
        return rearrange(torch.view_as_real(rotated), "b l h p two -> b l h (p two)")
    pairs = rearrange(x.to(torch.float64), "b l h (p two) -> b l h p two", two=2).contiguous()
    rotated = torch.view_as_complex(pairs).mul_(rearrange(frequencies, "l p -> 1 l 1 p"))
    return rearrange(torch.view_as_real(rotated), "b l h p two -> b l h (p two)").to(torch.float32)
