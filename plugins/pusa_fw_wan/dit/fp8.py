"""Scaled fp8 weights: per-tensor quantisation and dequantisation (``W = stored * scale``).

``quantize_fp8`` maps the largest weight onto the largest finite fp8 value; ``dequantize`` broadcasts a scale
given per tensor (`[]`) or per output row (`[out, 1]`), as "scaled fp8" checkpoint files store it.
"""

from __future__ import annotations

import torch

from pusa_fw.errors import InputError

__all__ = ["FP8_DTYPES", "dequantize", "quantize_fp8", "row_scale"]

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)

_CHUNK_ELEMENTS = 1 << 22  # 16 MB of float32 per step of quantize_fp8


def quantize_fp8(weight: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor scaled fp8: ``scale = amax / max(dtype)``, ``stored = weight / scale`` rounded to `dtype`.

    Works through the weight in chunks of `_CHUNK_ELEMENTS`, so it never holds a float32 copy of the whole
    tensor (a loader quantising a bf16 file keeps its peak near the stored size).

    Args:
        weight: `[out, in]` any float dtype.
        dtype: ``torch.float8_e4m3fn`` or ``torch.float8_e5m2``.

    Returns:
        ``(stored [out, in] in dtype, scale [] float32)``; an all-zero weight gets scale 1.
    """
    values = weight.detach()
    amax = torch.maximum(values.max(), -values.min()).float() if values.numel() else torch.zeros(())
    finite_max = torch.finfo(dtype).max
    # amax / max underflows for float32 weights below ~5e-36: keep the scale a normal float32 then
    scale = torch.where(
        amax > 0, (amax / finite_max).clamp_min(torch.finfo(torch.float32).tiny), torch.ones_like(amax)
    ).to(torch.float32)
    flat = values.reshape(-1)
    stored = torch.empty(flat.shape, dtype=dtype, device=values.device)
    for start in range(0, flat.numel(), _CHUNK_ELEMENTS):
        chunk = flat[start : start + _CHUNK_ELEMENTS].float() / scale
        stored[start : start + _CHUNK_ELEMENTS] = chunk.clamp_(-finite_max, finite_max).to(dtype)
    return stored.reshape(values.shape), scale


def row_scale(scale: torch.Tensor | None, out_features: int) -> torch.Tensor | None:
    """A scale as stored on the layer: `[]` (per tensor) or `[out, 1]` (per output row), float32."""
    if scale is None:
        return None
    scale = scale.detach().to(torch.float32)
    if scale.numel() == 1:
        return scale.reshape(())
    if scale.numel() == out_features:
        return scale.reshape(out_features, 1)
    raise InputError(
        f"scale_weight has shape {tuple(scale.shape)}; expected one value or one per output row "
        f"({out_features})"
    )


def dequantize(stored: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """``stored * scale`` in `dtype` (the scale broadcast per tensor or per output row).

    The product is computed in float32 and rounded to `dtype` once: ``stored`` is upcast to `dtype` (exact
    for fp8 into bf16 / fp16 / fp32), then multiplied in place by the float32 scale with a `dtype` output
    (``torch.mul(..., out=...)`` computes in the promoted float32 and rounds on the write). The scale is
    never rounded to `dtype` first: a bf16 scale would be a systematic per-layer (or per-row) gain error of
    up to 2^-8 = 0.39 % (fp16: 2^-11). On CUDA the mixed-dtype multiply casts on the fly (one pass, no
    float32 temporary); the CPU's TensorIterator may stage it through a float32 buffer of the layer.
    """
    weight = stored.to(dtype)
    if scale is None:
        return weight
    scale = scale.to(device=weight.device, dtype=torch.float32)
    if weight is stored:
        return weight * scale if dtype == torch.float32 else torch.mul(weight, scale).to(dtype)
    return torch.mul(weight, scale, out=weight)
