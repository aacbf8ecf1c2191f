"""Give a trained toy DiT the codec's position channels without changing what it computes.

`pusa_fw_toy.codec.ToyCodecConfig.position_ramps` appends two latent channels. A DiT trained without
them takes ``in_dim`` channels and predicts ``out_dim``; `widen_channels` adds the new channels with zero
weights: the patch embedding ignores them at first, and the head predicts a zero velocity for them. The
widened DiT's pixel-channel output is then exactly the old one, and training on (a curriculum) teaches
it to read and predict the new channels.
"""

from __future__ import annotations

import torch
from einops import rearrange

__all__ = ["widen_channels"]

PATCH_KERNEL = "patch_embedding.weight"
HEAD_WEIGHT = "head.head.weight"
HEAD_BIAS = "head.head.bias"


def widen_channels(tensors: dict[str, torch.Tensor], added: int) -> dict[str, torch.Tensor]:
    """Append `added` latent channels, with zero weights, to a Wan DiT's input and output.

    Args:
        tensors: the DiT state dict in the official key format (``patch_embedding.weight``
            `[D, C, pf, ph, pw]`; ``head.head.weight`` `[pf * ph * pw * C, D]`, channel fastest, and its bias).
        added: channels to append (after the existing ones, in input and output).

    Returns:
        A new state dict: ``patch_embedding.weight`` `[D, C + added, pf, ph, pw]`, the head
        `[pf * ph * pw * (C + added), D]`; every other tensor is the same object.

    Raises:
        ValueError: `added` below 1, or tensors that are not a Wan DiT's.
    """
    if added < 1:
        raise ValueError(f"added={added}: widen by at least one channel")
    missing = [key for key in (PATCH_KERNEL, HEAD_WEIGHT, HEAD_BIAS) if key not in tensors]
    if missing:
        raise ValueError(f"not a Wan DiT state dict: {missing} missing")
    kernel = tensors[PATCH_KERNEL]
    dim, channels = kernel.shape[:2]
    patch_volume = int(torch.tensor(kernel.shape[2:]).prod())
    head, bias = tensors[HEAD_WEIGHT], tensors[HEAD_BIAS]
    if head.shape != (patch_volume * channels, dim):
        raise ValueError(f"head {tuple(head.shape)} does not map {dim} features to {patch_volume} x {channels} "
                         "channels; only DiTs with out_dim == in_dim can be widened")
    zeros_in = kernel.new_zeros(dim, added, *kernel.shape[2:])
    widened = dict(tensors)
    widened[PATCH_KERNEL] = torch.cat([kernel, zeros_in], dim=1)
    per_patch = rearrange(head, "(v c) d -> v c d", v=patch_volume)
    widened[HEAD_WEIGHT] = rearrange(torch.cat([per_patch, per_patch.new_zeros(patch_volume, added, dim)], dim=1),
                                     "v c d -> (v c) d").contiguous()
    per_patch_bias = rearrange(bias, "(v c) -> v c", v=patch_volume)
    widened[HEAD_BIAS] = rearrange(torch.cat([per_patch_bias, per_patch_bias.new_zeros(patch_volume, added)], dim=1),
                                   "v c -> (v c)").contiguous()
    return widened
