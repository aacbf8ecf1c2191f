"""Shard-only loading of a Wan DiT under FSDP2: a rank reads and keeps only the rows of its own shards.

The model is built on the meta device (`pusa_fw_wan.dit.checkpoint_source.open_wan_dit`, or
`meta_wan_dit` for a random init), sharded with `shard_dit` (FSDP2 ``fully_shard`` per block, then the
root) while still on meta, and materialised with ``model.to_empty(device=...)``: each rank then owns
uninitialised local shards only. `load_dit_shards` fills them from the checkpoint one tensor at a time:
FSDP2 shards every parameter on dim 0 (``torch.chunk`` rows), so a rank's shard of a C-contiguous tensor
is one contiguous byte range of the file, and the rank reads exactly that range
(`pusa_fw_wan.weights.rows.read_rows`). It converts the rows to their storage dtype on the rank's device
and copies them into its local shard. Peak host memory per rank is one tensor's shard
rows plus their converted copy; bytes read per rank are about the checkpoint's size / world size (the
small replicated ``scale_weight`` tensors are read whole). No rank ever holds a full-size tensor of a
parameter whose first dimension is at least the world size, and no collective runs during the load.

`init_dit_shards` does the same for a random init (``model.init_seed``): each parameter's full float32
value is drawn on the CPU from one generator in `WanDiT`'s parameter order (`pusa_fw_wan.dit.init`), one
tensor at a time, converted like a loaded one and sliced, so every rank gets exactly the single-process
weights (the draws need the whole tensor: a random init holds one full tensor at a time).

Storage dtypes: bf16 / fp16 / fp32 large linears, and fp8 ones from a file stored in the same fp8 dtype
(bits and ``scale_weight`` kept). Quantising a non-fp8 file to fp8 needs the amax of the whole tensor, so
that case is refused with one line (use a scaled-fp8 file, or bf16). A LoRA-injected model (peft) is
filled through each target's ``base_layer``; the LoRA factors are the caller's. LoRA files to *merge*
(``generate --fsdp --lora``) are added to each rank's rows as they are filled
(`pusa_fw_wan.parallel.shard_lora`).

What a CPU test cannot show: on CUDA the rows are read to host memory and copied to the GPU shard one
tensor at a time (pinned memory and NCCL play no part in the load); the host peak at 14B was not measured
here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pusa_fw.errors import CheckpointError, InputError

from pusa_fw_wan.dit.checkpoint_source import WanDiTSource, dequantized
from pusa_fw_wan.dit.config import WanConfig
from pusa_fw_wan.dit.fp8 import FP8_DTYPES, dequantize, quantize_fp8, row_scale
from pusa_fw_wan.dit.init import initial_value
from pusa_fw_wan.dit.low_precision import LowPrecisionLinear
from pusa_fw_wan.dit.model import WanDiT
from pusa_fw_wan.dit.storage import set_weights_dtype
from pusa_fw_wan.weights.rows import read_rows

if TYPE_CHECKING:
    from pusa_fw_wan.parallel.shard_lora import ShardLoras

__all__ = ["ShardLoadReport", "init_dit_shards", "load_dit_shards", "local_rows", "meta_wan_dit"]


@dataclass
class ShardLoadReport:
    """What one rank read and kept during a shard-only load.

    Attributes:
        bytes_read: bytes read from the checkpoint files (or drawn, for a random init).
        bytes_kept: bytes of the local shards filled (their storage dtype).
        bytes_full: bytes of every filled parameter in full (what a whole-model load would hold).
        full_tensors: parameters whose full tensor this rank held although their first dimension is at
            least the world size (empty for a checkpoint load; every one for a random init).
        lora_bytes_read: bytes of the factors and diffs of the LoRAs merged into the load (every rank
            reads and holds them whole).
        lora_report: the `LoraReport` of those LoRAs (None without any).
    """

    bytes_read: int = 0
    bytes_kept: int = 0
    bytes_full: int = 0
    full_tensors: list[str] = field(default_factory=list)
    lora_bytes_read: int = 0
    lora_report: Any = None


def local_rows(parameter: torch.Tensor) -> tuple[int, int]:
    """The rows ``[start, stop)`` of the full tensor that this rank's shard of `parameter` holds.

    A plain tensor holds all its rows; an FSDP2 ``DTensor`` holds the dim-0 chunk of its mesh coordinate.

    Raises:
        InputError: a DTensor sharded on another dimension than 0.
    """
    if parameter.ndim == 0:
        return 0, 1
    from torch.distributed.tensor import DTensor

    if not isinstance(parameter, DTensor):
        return 0, int(parameter.shape[0])
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    shape, offset = compute_local_shape_and_global_offset(
        parameter.shape, parameter.device_mesh, parameter.placements
    )
    if tuple(shape[1:]) != tuple(parameter.shape[1:]) or any(offset[1:]):
        raise InputError(
            f"a shard-only load needs dim-0 sharding (FSDP2), got placements {parameter.placements}"
        )
    return int(offset[0]), int(offset[0]) + int(shape[0])


def meta_wan_dit(config: WanConfig, weights_dtype: str | torch.dtype | None = None) -> WanDiT:
    """A float32 `WanDiT` of `config` on the meta device, its large linears stored in `weights_dtype`."""
    with torch.device("meta"):
        model = WanDiT(config)
    return set_weights_dtype(model, weights_dtype, torch.float32)


def _target(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The module holding parameter `name` (official path; through a peft ``base_layer``), its attribute."""
    module_path, _, attribute = name.rpartition(".")
    module = model.get_submodule(module_path) if module_path else model
    if hasattr(module, "get_base_layer"):
        module = module.get_base_layer()
    return module, attribute


def _local(parameter: torch.Tensor) -> torch.Tensor:
    return parameter.to_local() if hasattr(parameter, "to_local") else parameter


def _rows_scale(scale: torch.Tensor | None, out_features: int, start: int, stop: int) -> torch.Tensor | None:
    """The `[stop - start, 1]` rows of a per-row scale, or a per-tensor scale as it is."""
    scale = row_scale(scale, out_features)
    return scale if scale is None or scale.ndim == 0 else scale[start:stop]


def _store(module: nn.Module, attribute: str, name: str, rows: torch.Tensor, scale: torch.Tensor | None,
           start: int, stop: int, other_dtype: torch.dtype) -> None:
    """Convert `rows` (`[stop - start, ...]` of the full tensor `name`, fp8 with its full `scale`) and copy
    them into the module's local shard, as `LowPrecisionLinear.set_weight` or the whole-model loader would."""
    parameter = getattr(module, attribute)
    local = _local(parameter)
    device = local.device
    if isinstance(module, LowPrecisionLinear) and attribute == "weight":
        storage = local.dtype
        out_features = int(parameter.shape[0])
        if rows.dtype == storage and (storage in FP8_DTYPES or scale is None):
            stored, kept = rows, row_scale(scale, out_features)
        elif storage in FP8_DTYPES:
            raise InputError(
                f"{name}: storing a {rows.dtype} weight as {storage} under FSDP2 needs the whole tensor's "
                f"amax for its scale; load a checkpoint stored in {storage} (scaled fp8), or use bfloat16"
            )
        else:
            rows_scale = _rows_scale(scale, out_features, start, stop)
            dense = rows if rows_scale is None else dequantize(rows, rows_scale, torch.float32)
            stored, kept = dense.to(device=device, dtype=storage), None
        fp8 = kept is not None and storage in FP8_DTYPES
        module._buffers["scale_weight"] = kept.to(device) if fp8 else None
    else:
        out_features = int(parameter.shape[0]) if parameter.ndim else 1
        stored = dequantized(rows.to(device), _rows_scale(scale, out_features, start, stop), other_dtype)
    if stored.dtype != local.dtype or tuple(stored.shape) != tuple(local.shape):
        raise CheckpointError(
            f"{name}: the checkpoint gives rows {tuple(stored.shape)} {stored.dtype} for a local shard "
            f"{tuple(local.shape)} {local.dtype}; build the meta model with the loader's dtypes"
        )
    with torch.no_grad():
        local.copy_(stored)


def _account(report: ShardLoadReport, name: str, parameter: torch.Tensor, read: int, held_rows: int) -> None:
    local = _local(parameter)
    report.bytes_read += read
    report.bytes_kept += local.numel() * local.element_size()
    report.bytes_full += parameter.numel() * local.element_size()
    world = parameter.device_mesh.size() if hasattr(parameter, "device_mesh") else 1
    if world > 1 and parameter.ndim and parameter.shape[0] >= world and held_rows == parameter.shape[0]:
        report.full_tensors.append(name)


def load_dit_shards(model: nn.Module, source: WanDiTSource, loras: ShardLoras | None = None
                    ) -> ShardLoadReport:
    """Fill the local shards of a sharded, ``to_empty``-materialised DiT from `source` (module docstring).

    Args:
        model: the meta model of `open_wan_dit` (optionally with LoRA injected), sharded with FSDP2 and
            materialised with ``to_empty``; its dtypes must be the loader's (float32 compute: as built;
            another compute dtype: after ``set_compute_dtype`` on meta).
        source: from the same `open_wan_dit` call.
        loras: LoRAs to merge (`pusa_fw_wan.parallel.shard_lora.ShardLoras`, read against the same meta
            model): each local shard gets its rows' deltas as it is filled; low-precision layers get the
            whole factors as ``merged_deltas``.

    Returns:
        This rank's `ShardLoadReport`.

    Raises:
        CheckpointError: a tensor that does not fit its shard.
        InputError: an fp8 storage the file's dtype cannot keep without the whole tensor.
    """
    report = ShardLoadReport()
    scales = source.read_scales()
    for file in source.files.weight_files:
        for raw_key in source.file_keys(file):
            name = source.weight_names[raw_key]
            module, attribute = _target(model, name)
            module_path = name.rpartition(".")[0]
            scale_key = source.scale_keys.get(module_path) if attribute == "weight" else None
            scale = scales.get(scale_key) if scale_key is not None else None
            parameter = getattr(module, attribute)
            start, stop = local_rows(parameter)
            rows = read_rows(file, raw_key, start, stop, what="Wan DiT checkpoint")
            _store(module, attribute, name, rows, scale, start, stop, source.target_dtype(name))
            if loras is not None:
                loras.add_rows(module, attribute, name, _local(parameter), start, stop)
            held = int(rows.shape[0]) if rows.ndim else 1
            _account(report, name, parameter, rows.numel() * rows.element_size(), held)
            del rows
    if loras is not None:
        loras.attach_low_precision(model)
        report.lora_bytes_read, report.lora_report = loras.bytes_read, loras.report
    return report


def init_dit_shards(model: nn.Module, config: WanConfig, generator: torch.Generator) -> ShardLoadReport:
    """Fill the local shards of a sharded, materialised float32-compute DiT with the seeded random init.

    Every rank draws every parameter's full value from `generator` in `WanDiT`'s parameter order (one
    tensor at a time) and keeps its rows, so the shards equal a single process's
    ``init_from_seed(WanDiT(config), generator)`` followed by ``set_weights_dtype``.
    """
    report = ShardLoadReport()
    order = meta_wan_dit(config)
    for name, meta in order.named_parameters():
        values = initial_value(name, meta.shape, generator)
        module, attribute = _target(model, name)
        parameter = getattr(module, attribute)
        start, stop = local_rows(parameter)
        scale = None
        storage = _local(parameter).dtype
        if isinstance(module, LowPrecisionLinear) and attribute == "weight" and storage in FP8_DTYPES:
            values, scale = quantize_fp8(values, storage)  # the whole tensor is here: the exact scale
        rows = values if values.ndim == 0 else values[start:stop]
        _store(module, attribute, name, rows, scale, start, stop, torch.float32)
        held = int(values.shape[0]) if values.ndim else 1
        _account(report, name, parameter, values.numel() * values.element_size(), held)
    return report
