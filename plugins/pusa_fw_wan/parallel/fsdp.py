"""FSDP2 sharding of the Wan DiT: one `fully_shard` group per transformer block, then the root.

Both training (team dist) and multi-GPU inference use `shard_dit`. Each block's weights are gathered just
before the block runs and freed after it (``reshard_after_forward=True``), so a rank holds one full block
plus its 1/N shard of the rest: a 14B model fits where one copy does not. The root group holds the
patch and text embeddings, the time MLP and the head.

Mixed precision follows PyTorch's `MixedPrecisionPolicy`: the sharded parameters keep their stored dtype,
and with ``param_dtype`` set they are cast for compute when gathered (as the official Wan FSDP does with
bf16); ``reduce_dtype`` is the gradient reduce-scatter dtype (training). Leave both None to compute in
the stored dtypes (e.g. after `WanDiT.set_compute_dtype`, which keeps norms and time modules in float32).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pusa_fw.errors import InputError

__all__ = ["dit_blocks", "load_sharded_dit", "shard_dit", "shard_text_encoder"]


def dit_blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a Wan DiT (`model.blocks`), with a clear error for anything else."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        raise InputError(
            f"shard_dit needs a Wan DiT with a non-empty `blocks` ModuleList, got {type(model).__name__}; "
            "pass a WanDiT (for Wan2.2 experts shard each expert)"
        )
    return list(blocks)


def shard_dit(
    model: nn.Module,
    mesh: Any,
    *,
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype | None = None,
    reshard_after_forward: bool = True,
) -> nn.Module:
    """Shard a Wan DiT with FSDP2 over ``mesh``: `fully_shard` per block, then the root (in place).

    Args:
        model: a `WanDiT` (anything with a ``blocks`` ModuleList of transformer blocks).
        mesh: a 1-D `torch.distributed.device_mesh.DeviceMesh` of the ranks that share the weights (2-D for
            HSDP: replicate x shard).
        param_dtype: dtype the gathered parameters are cast to for compute (None: keep stored dtypes).
        reduce_dtype: dtype of gradient reduce-scatter (None: the parameter dtype).
        reshard_after_forward: free each block's gathered weights after its forward (the memory saving of
            inference); False keeps them gathered until the backward (faster training, more memory).

    Returns:
        The same module, now an `FSDPModule` (its forward gathers weights block by block).

    Raises:
        InputError: ``model`` has no blocks or ``mesh`` is not a DeviceMesh.
    """
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    blocks = dit_blocks(model)
    if not isinstance(mesh, DeviceMesh):
        raise InputError(
            f"shard_dit needs a torch DeviceMesh, got {type(mesh).__name__}; "
            "build one with torch.distributed.device_mesh.init_device_mesh(device_type, (world_size,))"
        )
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    return model


def load_sharded_dit(
    path: str | Path,
    mesh: Any,
    device: torch.device | str,
    *,
    dtype: torch.dtype = torch.float32,
    weights_dtype: str | torch.dtype | None = None,
    loras: Sequence[Any] = (),
) -> tuple[nn.Module, Any]:
    """A Wan DiT checkpoint loaded shard-only: built on meta, `shard_dit`, ``to_empty``, own rows read.

    Every rank of `mesh` calls it; each reads only its rows of every tensor and keeps only its shards
    (`pusa_fw_wan.parallel.shard_load`), so no rank ever holds the whole model, on the host or the device.
    The weights equal `WanDiT.from_pretrained(path, dtype=dtype, weights_dtype=weights_dtype)` sharded.
    The gathered weights compute in their stored dtypes (no ``param_dtype`` cast, so fp8 weights keep
    their scales); FSDP2 all-gathers a block of mixed dtypes as bytes.

    `loras` (`pusa_fw_wan.lora.apply.LoraSpec`) are read whole by every rank, checked against the meta
    model before anything is sharded, and merged as each rank fills its rows
    (`pusa_fw_wan.parallel.shard_lora`): the weights then equal the one-process
    ``apply_loras(model, loras, merge=True)``.

    Returns:
        ``(model, report)``: the sharded model in eval mode, frozen, and this rank's `ShardLoadReport`
        (its ``lora_report`` says what the LoRAs patched).

    Raises:
        CheckpointError: unreadable files, keys that do not fit, or a LoRA that does not fit.
        InputError: fp8 storage asked of a file whose large linears are not stored in that fp8 dtype.
    """
    from pusa_fw_wan.dit.checkpoint import open_wan_dit
    from pusa_fw_wan.dit.storage import FP8_DTYPES
    from pusa_fw_wan.parallel.shard_load import load_dit_shards
    from pusa_fw_wan.parallel.shard_lora import ShardLoras

    model, source = open_wan_dit(path, dtype=dtype, weights_dtype=weights_dtype)
    if source.storage in FP8_DTYPES and source.linear_dtypes != {source.storage}:
        found = ", ".join(sorted(str(d).replace("torch.", "") for d in source.linear_dtypes))
        wanted = str(source.storage).replace("torch.", "")
        raise InputError(
            f"--weights-dtype {wanted} with --fsdp needs a checkpoint whose large linears are stored in "
            f"{wanted} (a scaled-fp8 file), but {path} stores {found}; use --weights-dtype bfloat16 or "
            "that fp8 file (quantising needs each whole tensor's amax, which no rank holds)"
        )
    model.set_compute_dtype(dtype)  # on meta: the dtypes the loaded model has
    model.requires_grad_(False)
    merged = ShardLoras(model, loras) if loras else None  # bad LoRAs fail here, before any shard exists
    shard_dit(model, mesh)
    model.to_empty(device=device)
    report = load_dit_shards(model, source, merged)
    return model.eval(), report


def shard_text_encoder(model: nn.Module, mesh: Any, *, param_dtype: torch.dtype | None = None,
                       reshard_after_forward: bool = True) -> nn.Module:
    """Shard a umT5 encoder (``WanTextEncoder.model``, a `UMT5EncoderModel`) per block, then the root.

    The official ``--t5_fsdp``. Every rank must then run the same encoder calls in the same order (no
    per-rank prompt cache hits), since each call gathers the weights with a collective.

    Args:
        model: the encoder module; its blocks are ``model.encoder.block``.
        mesh: 1-D `DeviceMesh` of the ranks that share the weights.
        param_dtype: compute dtype of the gathered weights (None: as stored).
        reshard_after_forward: free each block's gathered weights after its forward.

    Returns:
        The same module, sharded in place.

    Raises:
        InputError: no ``encoder.block`` ModuleList, or ``mesh`` is not a DeviceMesh.
    """
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    blocks = getattr(getattr(model, "encoder", None), "block", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        raise InputError(
            f"shard_text_encoder needs a umT5 encoder with encoder.block, got {type(model).__name__}"
        )
    if not isinstance(mesh, DeviceMesh):
        raise InputError(f"shard_text_encoder needs a torch DeviceMesh, got {type(mesh).__name__}")
    policy = MixedPrecisionPolicy(param_dtype=param_dtype)
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    return model
