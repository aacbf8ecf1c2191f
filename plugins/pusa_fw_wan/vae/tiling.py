"""Spatial tiling with overlap blending for the Wan VAE.

A tiled pass cuts the input into overlapping spatial tiles, runs the whole chunked (causal in time)
VAE pass on each tile separately, and blends the tile outputs with linear ramps across the overlaps
(a weighted average whose weights sum to one everywhere). Only one tile's activations exist at a time,
so the working memory depends on the tile size, not on the frame size.

Positions are counted in *cells*: one cell is the spatial unit that maps to a whole number of
positions on both sides (decode: 1 latent -> 8 pixels; encode: 8 pixels -> 1 latent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from pusa_fw.errors import InputError


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of one tiled pass lie, in cells.

    Attributes:
        height: cells along H of the whole input.
        width: cells along W.
        tile_height: cells per tile along H (<= height).
        tile_width: cells per tile along W (<= width).
        row_starts: first cell of every tile row.
        col_starts: first cell of every tile column.
    """

    height: int
    width: int
    tile_height: int
    tile_width: int
    row_starts: tuple[int, ...]
    col_starts: tuple[int, ...]

    @property
    def num_tiles(self) -> int:
        """Number of tiles the pass runs."""
        return len(self.row_starts) * len(self.col_starts)


def tile_starts(length: int, tile: int, overlap: int) -> tuple[int, tuple[int, ...]]:
    """Balanced tiles covering ``[0, length)``: at most `tile` cells each, neighbours overlapping by >= `overlap`.

    Uses the fewest tiles of at most `tile` cells, then shrinks them to the smallest equal size that still
    covers the length, so no tile is mostly overlap.

    Returns:
        ``(tile_size, starts)``: the balanced tile size (<= `tile`) and the first cell of each tile.
    """
    if tile >= length:
        return length, (0,)
    if not 0 <= overlap < tile:
        raise InputError(f"tile overlap {overlap} must be >= 0 and smaller than the tile size {tile}")
    count = -(-(length - overlap) // (tile - overlap))
    tile = -(-(length - overlap) // count) + overlap
    stride = tile - overlap
    return tile, tuple(min(i * stride, length - tile) for i in range(count))


def plan_tiles(height: int, width: int, tile_height: int, tile_width: int, overlap: int) -> TilePlan:
    """A balanced `TilePlan` for an input of ``height x width`` cells with tiles of at most the given size."""
    tile_height, row_starts = tile_starts(height, tile_height, overlap)
    tile_width, col_starts = tile_starts(width, tile_width, overlap)
    return TilePlan(height, width, tile_height, tile_width, row_starts, col_starts)


def choose_tile_size(
    height: int, width: int, bytes_per_cell: float, budget_bytes: float, min_tile: int
) -> tuple[int, int] | None:
    """Largest tile whose estimated working memory ``bytes_per_cell * h * w`` fits `budget_bytes`.

    Args:
        height: input height in cells.
        width: input width in cells.
        bytes_per_cell: estimated working bytes of one chunked pass per spatial cell.
        budget_bytes: the memory the pass may use.
        min_tile: the smallest tile side allowed (tiles below ~2x the overlap blend badly); used when
            even that does not fit the budget.

    Returns:
        None when the whole input fits (no tiling needed), else ``(tile_height, tile_width)``.
    """
    if bytes_per_cell * height * width <= budget_bytes:
        return None
    side = max(min_tile, int((budget_bytes / bytes_per_cell) ** 0.5))
    tile_height, tile_width = min(side, height), min(side, width)
    # A side clipped by a thin input leaves budget for the other side.
    if tile_height < side:
        tile_width = min(width, max(min_tile, int(budget_bytes / bytes_per_cell / tile_height)))
    elif tile_width < side:
        tile_height = min(height, max(min_tile, int(budget_bytes / bytes_per_cell / tile_width)))
    return tile_height, tile_width


def ramp(tile: int, start: int, previous_end: int | None, next_start: int | None, scale: int) -> torch.Tensor:
    """Blend weights ``[tile * scale]`` of one tile along one axis, in output positions.

    Weights rise linearly across the overlap with the previous tile, fall across the overlap with the
    next one, and are 1 elsewhere; they are strictly positive, and two ramps over the same overlap sum
    to one.

    Args:
        tile: tile length in cells.
        start: first cell of the tile.
        previous_end: one past the last cell of the previous tile, or None for the first tile.
        next_start: first cell of the next tile, or None for the last tile.
        scale: output positions per cell.
    """
    positions = torch.arange(tile * scale, dtype=torch.float32)
    weight = torch.ones(tile * scale)
    if previous_end is not None:
        rise = (previous_end - start) * scale
        weight = torch.minimum(weight, (positions + 1) / (rise + 1))
    if next_start is not None:
        fall = (start + tile - next_start) * scale
        weight = torch.minimum(weight, (tile * scale - positions) / (fall + 1))
    return weight


def _axis_weights(starts: tuple[int, ...], tile: int, scale: int) -> list[torch.Tensor]:
    """Ramps of every tile along one axis."""
    weights = []
    for i, start in enumerate(starts):
        previous_end = starts[i - 1] + tile if i > 0 else None
        next_start = starts[i + 1] if i + 1 < len(starts) else None
        weights.append(ramp(tile, start, previous_end, next_start, scale))
    return weights


def run_tiled(
    pass_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    plan: TilePlan,
    in_per_cell: int,
    out_per_cell: int,
    on_tile: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Run `pass_fn` on every tile of `x` and blend the outputs.

    Args:
        pass_fn: one full VAE pass ``[B, C_in, T_in, h_in, w_in] -> [B, C_out, T_out, h_out, w_out]``
            with ``h_out = h_in / in_per_cell * out_per_cell``.
        x: input ``[B, C_in, T_in, plan.height * in_per_cell, plan.width * in_per_cell]``.
        plan: the tiles, in cells.
        in_per_cell: input positions per cell (1 for latents, 8 for pixels).
        out_per_cell: output positions per cell.
        on_tile: called as ``on_tile(done, total)`` after each tile (progress reporting).

    Returns:
        ``[B, C_out, T_out, plan.height * out_per_cell, plan.width * out_per_cell]`` float32.
    """
    row_weights = _axis_weights(plan.row_starts, plan.tile_height, out_per_cell)
    col_weights = _axis_weights(plan.col_starts, plan.tile_width, out_per_cell)
    output: torch.Tensor | None = None
    weight_sum = torch.zeros(plan.height * out_per_cell, plan.width * out_per_cell, device=x.device)
    done = 0
    for row, row_start in enumerate(plan.row_starts):
        for col, col_start in enumerate(plan.col_starts):
            rows = slice(row_start * in_per_cell, (row_start + plan.tile_height) * in_per_cell)
            cols = slice(col_start * in_per_cell, (col_start + plan.tile_width) * in_per_cell)
            tile_out = pass_fn(x[..., rows, cols])
            if output is None:
                batch, channels, frames = tile_out.shape[:3]
                output = torch.zeros(
                    batch, channels, frames, *weight_sum.shape, dtype=torch.float32, device=x.device
                )
            weight = (row_weights[row][:, None] * col_weights[col][None, :]).to(x.device)
            out_rows = slice(row_start * out_per_cell, (row_start + plan.tile_height) * out_per_cell)
            out_cols = slice(col_start * out_per_cell, (col_start + plan.tile_width) * out_per_cell)
            output[..., out_rows, out_cols] += tile_out.float() * weight
            weight_sum[out_rows, out_cols] += weight
            del tile_out
            done += 1
            if on_tile is not None:
                on_tile(done, plan.num_tiles)
    assert output is not None  # a plan always holds at least one tile
    return output.div_(weight_sum)
