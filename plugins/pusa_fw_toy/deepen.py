"""Give a trained toy DiT more blocks without changing what it computes.

A Wan block adds three residual branches to its input: self-attention (through ``self_attn.o``),
cross-attention (``cross_attn.o``) and the feed-forward network (``ffn.2``). `add_blocks` appends copies of
the last block whose three output projections are zero, so each new block passes its input through
unchanged: the deeper DiT makes exactly the old videos, and training on gives it the extra capacity.
"""

from __future__ import annotations

import re

import torch

__all__ = ["add_blocks"]

ZEROED = ("self_attn.o.weight", "self_attn.o.bias", "cross_attn.o.weight", "cross_attn.o.bias",
          "ffn.2.weight", "ffn.2.bias")
"""Per-block parameters a new block starts at zero (its residual outputs)."""

_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def add_blocks(tensors: dict[str, torch.Tensor], added: int) -> tuple[dict[str, torch.Tensor], int]:
    """Append `added` identity blocks (copies of the last block with zero outputs) to a Wan DiT state dict.

    Args:
        tensors: the DiT state dict in the official key format (``blocks.{i}.…``).
        added: blocks to append.

    Returns:
        ``(state dict, layers)``: the new state dict (old tensors are the same objects) and its block count.

    Raises:
        ValueError: `added` below 1, or a state dict without blocks or missing an output projection.
    """
    if added < 1:
        raise ValueError(f"added={added}: add at least one block")
    indices = {int(match.group(1)) for key in tensors if (match := _BLOCK.match(key))}
    if not indices:
        raise ValueError("not a Wan DiT state dict: no blocks.{i}.* keys")
    layers = max(indices) + 1
    last = {match.group(2): value for key, value in tensors.items()
            if (match := _BLOCK.match(key)) and int(match.group(1)) == layers - 1}
    missing = [name for name in ZEROED if name not in last]
    if missing:
        raise ValueError(f"block {layers - 1} has no {missing}; not a Wan block")
    deeper = dict(tensors)
    for index in range(layers, layers + added):
        for name, value in last.items():
            deeper[f"blocks.{index}.{name}"] = torch.zeros_like(value) if name in ZEROED else value.clone()
    return deeper, layers + added
