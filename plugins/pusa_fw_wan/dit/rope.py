"""3D rotary position embedding of the Wan2.1 DiT, in float64.

Each attention head of width ``head_dim`` holds ``head_dim / 2`` complex pairs (channels 2j, 2j+1). They
are split between the three grid axes as ``[c - 2 * (c // 3), c // 3, c // 3]`` pairs (frame, height,
width; 22/21/21 for head_dim 128), each axis with its own frequency ladder
``theta_j = 10000 ** (-2 j / d_axis)`` where ``d_axis`` is twice the axis' pair count. The token at grid
position (f, h, w) is rotated by ``f * theta_frame``, ``h * theta_height`` and ``w * theta_width``. Angles
are float64 and the rotation is a complex128 multiplication (as in the official code); the result is
returned in float32. Nothing here is a module parameter or a state-dict key.
"""

from __future__ import annotations

import torch
from einops import rearrange

__all__ = ["apply_rope", "rope_axis_pairs", "rope_frequencies"]

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
    grid: tuple[int, int, int], head_dim: int, device: torch.device | str = "cpu", max_positions: int = 1024
) -> torch.Tensor:
    """Unit complex rotation of every token and channel pair.

    Args:
        grid: (F, H, W) token grid after patchify; tokens are ordered frame-major, then height, then width.
        head_dim: width of one attention head (even).
        device: where to build the table.
        max_positions: largest extent per axis the official table covers (1024).

    Returns:
        `[F * H * W, head_dim / 2]` complex128, ``exp(i * angle)``.

    Raises:
        ValueError: an axis is longer than ``max_positions``.
    """
    frames, height, width = grid
    if max(grid) > max_positions:
        raise ValueError(f"token grid {grid} exceeds the RoPE table of {max_positions} positions per axis")
    device = torch.device(device)
    frame_pairs, height_pairs, width_pairs = rope_axis_pairs(head_dim)
    frame_angles = _axis_angles(frames, frame_pairs, device)
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


def apply_rope(x: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs of every head by complex multiplication in complex128.

    Args:
        x: `[B, L, heads, head_dim]` queries or keys (any float dtype).
        frequencies: `[L, head_dim / 2]` complex128 from `rope_frequencies`.

    Returns:
        `[B, L, heads, head_dim]` float32.
    """
    pairs = rearrange(x.to(torch.float64), "b l h (p two) -> b l h p two", two=2).contiguous()
    rotated = torch.view_as_complex(pairs).mul_(rearrange(frequencies, "l p -> 1 l 1 p"))
    return rearrange(torch.view_as_real(rotated), "b l h p two -> b l h (p two)").to(torch.float32)
