"""Low-precision storage of the DiT's large linears: bf16 / fp16 / fp8 weights computed in the compute dtype.

A `LowPrecisionLinear` (`pusa_fw_wan.dit.low_precision`) keeps its weight in a *storage* dtype
(``float8_e4m3fn``, ``float8_e5m2``, ``bfloat16``, ``float16`` or ``float32``) and computes in its *compute* dtype: the weight is upcast (and,
for fp8, multiplied by its ``scale_weight``) inside ``forward``, one layer at a time, so the only full-size
compute-dtype copy is the one of the layer that is running. The bias stays in the compute dtype.

fp8 weights carry a scale: ``W = stored.to(compute) * scale_weight``. A scale is either the file's own
``scale_weight`` (a scalar, or one value per output row) or computed at load time per tensor as
``amax(|W|) / max(fp8)``, so the largest weight maps to the largest finite fp8 value.

Only the large linears of the blocks are stored this way (`is_large_linear`: self/cross-attention
q, k, v, o and the two FFN layers, 98 % of the 14B model's parameters); norms, modulation, the time and
text embeddings, the patch embedding and the head keep the dtypes `WanDiT.set_compute_dtype` gives them.

LoRA on such a layer is either unmerged (peft's branch adds ``scaling * B(A x)`` to the output) or merged
per layer: `merged_deltas` holds the low-rank factors, and each forward builds the dequantised weight plus
``scaling * B @ A`` in float32 for this layer only. The stored fp8 bits never change, so unmerging is exact.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from pusa_fw.errors import InputError

from pusa_fw_wan.dit.fp8 import FP8_DTYPES, dequantize, quantize_fp8
from pusa_fw_wan.dit.low_precision import LowPrecisionLinear

__all__ = [
    "FP8_DTYPES",
    "WEIGHTS_DTYPES",
    "LowPrecisionLinear",
    "compute_dtype_of",
    "dequantize",
    "describe_storage",
    "is_large_linear",
    "large_linear_names",
    "parse_weights_dtype",
    "quantize_fp8",
    "set_weights_dtype",
    "storage_bytes",
    "weights_dtype_of",
]

WEIGHTS_DTYPES: dict[str, torch.dtype | None] = {
    "auto": None,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float8_e4m3fn": torch.float8_e4m3fn,
    "float8_e5m2": torch.float8_e5m2,
}
"""Names accepted for ``weights_dtype`` (``auto``: a file's fp8 dtype if it has one, else compute dtype)."""

_LARGE_LINEAR = re.compile(r"^blocks\.\d+\.(self_attn\.[qkvo]|cross_attn\.[qkvo]|ffn\.0|ffn\.2)$")


def is_large_linear(module_path: str) -> bool:
    """Whether a module path (official names, e.g. ``blocks.3.ffn.0``) is a linear stored low-precision."""
    return _LARGE_LINEAR.match(module_path) is not None


def large_linear_names(model: nn.Module) -> list[str]:
    """Module paths of the model's large linears (plain or already low-precision)."""
    return [
        name
        for name, module in model.named_modules()
        if is_large_linear(name) and isinstance(_base(module), nn.Linear)
    ]


def parse_weights_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """``"auto"``/None -> None; a name of `WEIGHTS_DTYPES` or a torch dtype -> that dtype.

    Raises:
        InputError: an unknown name or dtype.
    """
    if name is None:
        return None
    if isinstance(name, torch.dtype):
        if name not in WEIGHTS_DTYPES.values():
            raise InputError(f"weights_dtype {name} is not supported; use one of {', '.join(WEIGHTS_DTYPES)}")
        return name
    if name not in WEIGHTS_DTYPES:
        raise InputError(f"weights_dtype {name!r} is unknown; use one of {', '.join(WEIGHTS_DTYPES)}")
    return WEIGHTS_DTYPES[name]


def compute_dtype_of(linear: nn.Module) -> torch.dtype:
    """The dtype a linear computes in (looking through a peft LoRA wrapper)."""
    base = linear.get_base_layer() if hasattr(linear, "get_base_layer") else linear
    dtype = getattr(base, "compute_dtype", None)
    return dtype if dtype is not None else base.weight.dtype


def weights_dtype_of(model: nn.Module) -> torch.dtype | None:
    """The storage dtype of the model's large linears (None when it has none)."""
    for name in large_linear_names(model):
        return model.get_submodule(name).weight.dtype
    return None


def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, child, module)


def _base(module: nn.Module) -> nn.Module:
    return module.get_base_layer() if hasattr(module, "get_base_layer") else module


def set_weights_dtype(
    model: nn.Module, weights_dtype: str | torch.dtype | None, compute_dtype: torch.dtype | None = None
) -> nn.Module:
    """Store the large linears of a (loaded or meta) model in `weights_dtype`, computed in `compute_dtype`.

    Storing in the compute dtype gives plain `nn.Linear` layers back. Meta layers stay meta (the loader
    fills them). A model carrying LoRA adapters cannot change its storage (apply LoRAs afterwards).

    Args:
        model: a `WanDiT` (anything with official block names).
        weights_dtype: name or dtype; ``"auto"``/None keeps the current storage.
        compute_dtype: default: the dtype of the model's patch embedding (`WanDiT.compute_dtype`).

    Returns:
        The model (changed in place).
    """
    storage = parse_weights_dtype(weights_dtype)
    if storage is None:
        return model
    if compute_dtype is None:
        compute_dtype = model.patch_embedding.weight.dtype  # type: ignore[union-attr]
    for path in large_linear_names(model):
        current = model.get_submodule(path)
        if _base(current) is not current:
            raise InputError("the model carries LoRA adapters; set weights_dtype before applying LoRAs")
        bias = current.bias
        if storage == compute_dtype:
            if not isinstance(current, LowPrecisionLinear):
                continue
            plain = nn.Linear(
                current.in_features,
                current.out_features,
                bias is not None,
                device=current.weight.device,
                dtype=compute_dtype,
            )
            plain.weight = nn.Parameter(current.dequantized_weight(compute_dtype), requires_grad=False)
            if bias is not None:
                plain.bias = nn.Parameter(bias.detach().to(compute_dtype), requires_grad=bias.requires_grad)
            _replace(model, path, plain)
            continue
        layer = LowPrecisionLinear.empty_like(current, storage, compute_dtype)
        if current.weight.is_meta and storage in FP8_DTYPES:  # the shape a loaded fp8 layer has (the
            layer._buffers["scale_weight"] = torch.empty((), device="meta")  # loader replaces it)
        if not current.weight.is_meta:
            if isinstance(current, LowPrecisionLinear):
                layer.set_weight(current.weight.detach(), current.scale_weight)
            else:
                layer.set_weight(current.weight.detach())
            if bias is not None:
                layer.bias = nn.Parameter(bias.detach().to(compute_dtype), requires_grad=bias.requires_grad)
        _replace(model, path, layer)
    return model


def storage_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer of the model (tied tensors once)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


def describe_storage(model: nn.Module) -> dict[str, Any]:
    """``{"weights_dtype": ..., "compute_dtype": ...}`` of the large linears, for sidecars and reports."""
    storage = weights_dtype_of(model)
    names = large_linear_names(model)
    compute = compute_dtype_of(model.get_submodule(names[0])) if names else None
    return {
        "weights_dtype": str(storage).replace("torch.", "") if storage else None,
        "compute_dtype": str(compute).replace("torch.", "") if compute else None,
    }
