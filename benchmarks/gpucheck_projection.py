"""`bench_memory`'s activation projection for the blocks `gpu_check.py` runs, plus exact weight accounting.

The projection is like for like with what a part measures: the same blocks, token grid, LoRA rank, storage
dtype, checkpointing mode and token chunks. `bench_memory.run_blocks` gives the activation peak (run on
``meta`` under its tensor tracker, flash-attention memory, bf16 compute: its blocks run without autocast,
the trainer's run with it, so fp32 saved inputs of the autocast casts are a known gap); the weights,
LoRA factors, gradients and AdamW moments are counted from the part's own model (`storage_bytes` of what
is on the device), not from bench_memory's bf16-compute model whose small tensors are bf16 instead of fp32.
"""

from __future__ import annotations

from functools import lru_cache

from torch import nn

from gpucheck_common import Size
from pusa_fw_wan.dit.storage import storage_bytes


@lru_cache(maxsize=16)
def activation_peak(size: Size, weights_dtype: str, mode: str, grid: tuple[int, int, int],
                    lora: bool, token_chunks: int = 1) -> float:
    """bench_memory's device bytes beyond the weights for one pass of the size's blocks (``inference``,
    ``train_ckpt`` or ``train_ckpt_offload``; training passes include the LoRA gradients)."""
    import bench_memory

    rank = size.lora_rank if lora else None
    model = bench_memory.build(size.config.num_layers, weights_dtype, rank, config=size.config,
                               token_chunks=token_chunks)
    frames, height, width = grid
    return bench_memory.run_blocks(model, (height, width), mode, frames=frames)["peak"]


def frozen_block_bytes(block: nn.Module) -> int:
    """Bytes of a block's frozen tensors (what block swap keeps on the host)."""
    tensors = [*[p for p in block.parameters() if not p.requires_grad], *block.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def device_weight_bytes(model: nn.Module, swapped: int = 0) -> int:
    """Weights + trainable factors on the device: all of them, less the swapped blocks' frozen tensors,
    plus two swapped blocks' copies while they compute (block swap's at-most-two)."""
    total = storage_bytes(model)
    if swapped:
        block = frozen_block_bytes(model.blocks[-1])
        total += (min(swapped, 2) - swapped) * block
    return total


def trainable_numel(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def projected_training(model: nn.Module, size: Size, weights_dtype: str, mode: str, *, swapped: int = 0,
                       token_chunks: int = 1, adamw: bool = True) -> float:
    """Projected peak of a LoRA step's forward + backward: device weights and factors, two fp32 AdamW
    moments when the optimizer holds state, and bench_memory's activations (with the gradients)."""
    moments = 8 * trainable_numel(model) if adamw else 0
    activations = activation_peak(size, weights_dtype, mode, size.grid, True, token_chunks)
    return float(device_weight_bytes(model, swapped) + moments + activations)


def projected_inference(model: nn.Module, size: Size, weights_dtype: str,
                        grid: tuple[int, int, int] | None = None) -> float:
    """Projected peak of a forward without gradients: the model's bytes + bench_memory's activations."""
    return float(storage_bytes(model) + activation_peak(size, weights_dtype, "inference",
                                                         size.grid if grid is None else grid, False))


def block_bytes(model: nn.Module) -> int:
    """Bytes of one block of the model (all its tensors)."""
    return storage_bytes(model.blocks[0])


__all__ = ["activation_peak", "block_bytes", "device_weight_bytes", "frozen_block_bytes",
           "projected_inference", "projected_training", "trainable_numel"]
