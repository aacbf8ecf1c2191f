"""`LowPrecisionLinear`: a linear whose weight is stored in bf16 / fp16 / fp8 and computed in its compute dtype.

The weight is upcast (and, for fp8, multiplied by its ``scale_weight``) inside ``forward``, one layer at a
time; with gradients on and a frozen weight, autograd saves the *stored* weight and dequantises it again in
the backward. `pusa_fw_wan.dit.storage` decides which layers are stored this way and converts models.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pusa_fw_wan.dit.fp8 import FP8_DTYPES, dequantize, quantize_fp8, row_scale

__all__ = ["LowPrecisionLinear"]


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
        """The weight as computed: stored * scale (+ merged LoRA deltas), `[out, in]` in `dtype`."""
        dtype = self.compute_dtype if dtype is None else dtype
        if not self.merged_deltas:
            return dequantize(self.weight, self.scale_weight, dtype)
        dense = dequantize(self.weight, self.scale_weight, torch.float32)
        for down, up, _bias, scaling in self.merged_deltas:
            dense.addmm_(up.float(), down.float(), alpha=scaling)
        return dense.to(dtype)

    def _bias(self) -> torch.Tensor | None:
        bias = self.bias
        for _down, up, up_bias, scaling in self.merged_deltas:
            if up_bias is not None:
                extra = up_bias.to(self.compute_dtype) * scaling
                bias = extra if bias is None else bias.to(self.compute_dtype) + extra
        return None if bias is None else bias.to(self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[..., in]` -> `[..., out]` in the compute dtype.

        With gradients on and a frozen weight, autograd keeps the *stored* weight for the backward pass
        and dequantises it again there (`_FrozenStoredLinear`), instead of keeping a compute-dtype copy of
        every layer's weight alive until backward.
        """
        x = x.to(self.compute_dtype)
        if torch.is_grad_enabled() and not self.weight.requires_grad and not self.merged_deltas:
            bias = None if self.bias is None else self.bias.to(self.compute_dtype)
            return _FrozenStoredLinear.apply(x, self.weight, self.scale_weight, bias)
        return F.linear(x, self.dequantized_weight(), self._bias())

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
