"""`LowPrecisionLinear`: a linear whose weight is stored in bf16 / fp16 / fp8 and computed in its compute dtype.

The weight is upcast (and, for fp8, multiplied by its ``scale_weight``) inside ``forward``, one layer at a
time; with gradients on and a frozen weight, autograd saves the *stored* weight and dequantises it again in
the backward. `pusa_fw_wan.dit.storage` decides which layers are stored this way and converts models.

Under autocast (the trainer's bf16 autocast) the input and the weight go straight to the autocast dtype
(`matmul_dtype`): autocast would cast both to it for the GEMM anyway, so upcasting them to a float32
compute dtype first only added a full-size float32 copy of the activation and of the weight per call;
the result is bit-identical (fp8 dequantisation rounds the float32 product once either way).

Merged LoRA factors (``merged_deltas``, e.g. Pusa V1's rank 512 on an fp8 base) are added in every forward:

- float32 compute: ``W + scaling * B @ A`` built in float32 (exact as before; CPU inference);
- bf16 / fp16 compute: ``W`` dequantised to the compute dtype, then ``addmm_`` of the factors cast to it:
  the rank-r product runs on the tensor cores with float32 accumulation and is rounded once into the
  weight (2 roundings instead of 1). Against the float32 merge that is a max-abs error of about one unit
  in the last place of the merged weight (bounded in ``tests/wan/test_lora_merge_precision.py``), while
  a float32 SIMT rank-512 product costs ~0.3 s per Wan 14B forward on an H100 (tensor cores: ~30 ms);
- ``cache_merged_weight()``: build ``W + scaling * B @ A`` once in the compute dtype and keep it (no
  per-forward cost; one compute-dtype copy of the layer's weight in memory: 28 GB for a bf16 14B, so it
  is opt-in, for devices with room to spare).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pusa_fw_wan.dit.fp8 import FP8_DTYPES, dequantize, quantize_fp8, row_scale

__all__ = ["LowPrecisionLinear", "autocast_dtype"]


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype active for `device_type` (``"cuda"``, ``"cpu"``), or None outside autocast.

    Devices autocast does not know (``"meta"``, used by the memory model) are never under autocast.
    """
    if not torch.amp.is_autocast_available(device_type) or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


class LowPrecisionLinear(nn.Linear):
    """A linear whose weight is stored in ``storage_dtype`` and computed in ``compute_dtype``.

    Attributes:
        compute_dtype: dtype of the matmul (input, dequantised weight, bias, output).
        scale_weight: buffer, `[]` or `[out, 1]` float32 for fp8 storage; None otherwise.
        merged_deltas: merged LoRA factors ``(down [r, in], up [out, r], up_bias [out] | None, scaling)``
            added to the dequantised weight in every forward (see the module docstring).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        storage_dtype: torch.dtype,
        compute_dtype: torch.dtype,
        device: torch.device | str | None = None,
    ) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = in_features, out_features
        self.compute_dtype = compute_dtype
        self.weight = nn.Parameter(
            torch.empty(out_features, in_features, dtype=storage_dtype, device=device),
            requires_grad=False,
        )
        self.bias = (
            nn.Parameter(torch.empty(out_features, dtype=compute_dtype, device=device)) if bias else None
        )
        self.register_buffer("scale_weight", None)
        self.merged_deltas: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, float]] = []
        self._merged_cache: torch.Tensor | None = None

    @property
    def storage_dtype(self) -> torch.dtype:
        """The dtype the weight is kept in."""
        return self.weight.dtype

    @classmethod
    def empty_like(
        cls, linear: nn.Linear, storage_dtype: torch.dtype, compute_dtype: torch.dtype
    ) -> LowPrecisionLinear:
        """An uninitialised layer of the same shape on the same device (meta stays meta)."""
        return cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            storage_dtype=storage_dtype,
            compute_dtype=compute_dtype,
            device=linear.weight.device,
        )

    def set_weight(self, weight: torch.Tensor, scale: torch.Tensor | None = None) -> None:
        """Store `weight` (`[out, in]`, any float dtype; fp8 with its `scale`) in the storage dtype.

        A weight already in the (fp8) storage dtype keeps its bits and its scale; anything else is
        dequantised to float32 and, for fp8 storage, quantised with a fresh per-tensor scale.
        """
        storage = self.weight.dtype
        scale = row_scale(scale, self.out_features)
        if weight.dtype == storage and (storage in FP8_DTYPES or scale is None):
            stored = weight
        else:
            dense = weight if scale is None else dequantize(weight, scale, torch.float32)
            if storage in FP8_DTYPES:
                stored, scale = quantize_fp8(dense, storage)
            else:
                stored, scale = dense.to(storage), None
        if storage not in FP8_DTYPES:
            scale = None
        self.weight = nn.Parameter(stored, requires_grad=False)
        self._buffers["scale_weight"] = None if scale is None else scale.to(stored.device)

    def dequantized_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The weight as computed: stored * scale (+ merged LoRA deltas), `[out, in]` in `dtype`.

        Merged deltas are added in float32 when `dtype` is float32, else in `dtype` with float32
        accumulation (module docstring); a cached merge (`cache_merged_weight`) is returned as it is.
        """
        dtype = self.compute_dtype if dtype is None else dtype
        if not self.merged_deltas:
            return dequantize(self.weight, self.scale_weight, dtype)
        cache = self._merged_cache
        if cache is not None and cache.dtype == dtype and cache.device == self.weight.device:
            return cache
        if dtype == torch.float32:
            dense = dequantize(self.weight, self.scale_weight, torch.float32)
            for down, up, _bias, scaling in self.merged_deltas:
                dense.addmm_(up.float(), down.float(), alpha=scaling)
            return dense
        dense = dequantize(self.weight, self.scale_weight, dtype)
        for down, up, _bias, scaling in self.merged_deltas:
            dense.addmm_(up.to(dtype), down.to(dtype), alpha=scaling)
        return dense

    def cache_merged_weight(self, enabled: bool = True) -> None:
        """Keep ``W + scaling * B @ A`` in the compute dtype after building it once (or drop the cache).

        Costs one compute-dtype copy of the weight; build it after the LoRAs are merged (a later change
        of `merged_deltas` or of the compute dtype needs ``cache_merged_weight()`` again).
        """
        self._merged_cache = None
        if enabled and self.merged_deltas:
            self._merged_cache = self.dequantized_weight().detach()

    def _bias(self) -> torch.Tensor | None:
        bias = self.bias
        for _down, up, up_bias, scaling in self.merged_deltas:
            if up_bias is not None:
                extra = up_bias.to(self.compute_dtype) * scaling
                bias = extra if bias is None else bias.to(self.compute_dtype) + extra
        return None if bias is None else bias.to(self.compute_dtype)

    def matmul_dtype(self, x: torch.Tensor) -> torch.Tensor:
        """The dtype the GEMM of `x` runs in: the autocast dtype under autocast, else the compute dtype."""
        return autocast_dtype(x.device.type) or self.compute_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[..., in]` -> `[..., out]` in the compute dtype (the autocast dtype under autocast).

        With gradients on and a frozen weight, autograd keeps the *stored* weight for the backward pass
        and dequantises it again there (`_FrozenStoredLinear`), instead of keeping a compute-dtype copy of
        every layer's weight alive until backward.
        """
        dtype = self.matmul_dtype(x)
        x = x.to(dtype)
        if torch.is_grad_enabled() and not self.weight.requires_grad and not self.merged_deltas:
            bias = None if self.bias is None else self.bias.to(dtype)
            return _FrozenStoredLinear.apply(x, self.weight, self.scale_weight, bias)
        bias = self._bias()
        return F.linear(x, self.dequantized_weight(dtype), None if bias is None else bias.to(dtype))

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, storage_dtype={self.weight.dtype}, compute_dtype={self.compute_dtype}"
        )


class _FrozenStoredLinear(torch.autograd.Function):
    """``x @ dequantize(weight).T + bias`` that saves the stored weight, not its dequantised copy."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None, bias: torch.Tensor | None
    ) -> torch.Tensor:
        ctx.save_for_backward(weight, scale)
        ctx.has_bias = bias is not None
        return F.linear(x, dequantize(weight, scale, x.dtype), bias)

    @staticmethod
    def backward(
        ctx: Any, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, None, None, torch.Tensor | None]:
        weight, scale = ctx.saved_tensors
        grad_x = grad_out @ dequantize(weight, scale, grad_out.dtype) if ctx.needs_input_grad[0] else None
        grad_bias = None
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_bias = grad_out.reshape(-1, grad_out.shape[-1]).sum(0)
        return grad_x, None, None, grad_bias
