"""LoRAs merged into a shard-only load (``generate --fsdp --lora``): each rank adds its own rows' deltas.

A LoRA changes a weight ``W [out, in]`` by ``scaling * up @ down`` (``up [out, r]``, ``down [r, in]``,
``scaling = strength * alpha / r``), and rows ``[r0:r1]`` of that delta are ``scaling * up[r0:r1] @ down``:
they need only the rank's rows of ``up`` and the whole (small) ``down``. LoRA files are small, so every rank
reads them whole (`ShardLoras`, matched against the meta model with the same checks and errors as
`pusa_fw_wan.lora.apply.apply_loras`); `pusa_fw_wan.parallel.shard_load.load_dit_shards` then calls
`ShardLoras.add_rows` on each local shard right after filling it. The arithmetic is the one the one-process
path does (`apply_loras(..., merge=True)`, peft's merge), row by row:

- ``diff`` / ``diff_b`` entries first, in the order of the LoRAs: ``W += strength * diff`` in the
  parameter's dtype (refused on an fp8-stored weight, as without ``--fsdp``), done on a scratch tensor of
  the parameter's full size that holds the rank's rows (elsewhere zeros), so that each element is rounded
  exactly as in one process (a bf16 add with ``alpha`` rounds a vector's tail differently); it is as large
  as the diff, which every rank holds whole anyway.
- then every pair on a layer stored in its compute dtype (``nn.Linear``, convs): the factors are cast to
  the layer's dtype (as peft holds them), the delta rows are computed in float32 and cast to the layer's
  dtype, then added: ``rows += (scaling * up[r0:r1] @ down).to(dtype)``; a ``lora_B`` bias adds
  ``scaling * up_bias[r0:r1]`` to the bias rows. Convs follow peft's conv delta on the rank's rows of
  ``up``. On the CPU this is peft's arithmetic exactly; on CUDA peft multiplies bf16 factors in bf16, this
  path in float32 (one rounding fewer).
- a layer stored in another dtype than it computes in (`LowPrecisionLinear`: bf16 storage with float32
  compute, or fp8) is never changed: its factors go whole to ``merged_deltas`` (`attach_low_precision`) and
  each forward adds ``scaling * up @ down`` to the gathered, dequantised weight, as without ``--fsdp``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pusa_fw.errors import InputError

from pusa_fw_wan.dit.fp8 import FP8_DTYPES
from pusa_fw_wan.dit.low_precision import LowPrecisionLinear
from pusa_fw_wan.lora.apply import LoraSpec, applied_lora, read_and_match_loras
from pusa_fw_wan.lora.report import LoraReport

__all__ = ["ShardLoras"]


@dataclass(frozen=True)
class _Pair:
    """One LoRA pair of one layer: ``down [r, in(, k...)]``, ``up [out, r(, 1...)]``, ``up_bias [out]``."""

    down: torch.Tensor
    up: torch.Tensor
    up_bias: torch.Tensor | None
    scaling: float


def _bytes(*tensors: torch.Tensor | None) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors if tensor is not None)


class ShardLoras:
    """LoRA files read whole and matched against a (meta) DiT, to be merged into its shards row by row.

    Attributes:
        pairs: module path -> its pairs, in the order of the LoRAs.
        diffs: parameter name -> ``(strength, full delta)``, in the order of the LoRAs.
        report: the `LoraReport` (merged) the one-process path would give.
        bytes_read: bytes of the LoRA factors and diffs (every rank reads and holds them whole).
    """

    def __init__(self, model: nn.Module, specs: Sequence[LoraSpec]) -> None:
        """Read and match `specs` against `model` (strict, as ``generate`` applies them); nothing changes.

        Raises:
            CheckpointError: a LoRA that does not fit the model.
            InputError: clashing names, or a full ``diff`` on a weight stored in fp8.
        """
        self.pairs: dict[str, list[_Pair]] = {}
        self.diffs: dict[str, list[tuple[float, torch.Tensor]]] = {}
        self.bytes_read = 0
        applied = []
        for spec, state, matched in read_and_match_loras(model, specs, strict=True):
            strength = float(spec.strength)
            for path, entry in matched.pairs.items():
                assert entry.down is not None and entry.up is not None
                alpha = float(entry.alpha if entry.alpha is not None else entry.rank)
                scaling = strength * alpha / entry.rank  # peft's set_scale(strength)
                self.pairs.setdefault(path, []).append(_Pair(entry.down, entry.up, entry.up_bias, scaling))
            for name, (parameter, delta) in matched.diffs.items():
                if parameter.dtype in FP8_DTYPES:
                    raise InputError(
                        f"the LoRA has a full-weight diff for {name}, which is stored in {parameter.dtype}; "
                        "load the model with weights_dtype bfloat16 (--weights-dtype bfloat16) to apply it"
                    )
                self.diffs.setdefault(name, []).append((strength, delta))
            self.bytes_read += sum(_bytes(entry.down, entry.up, entry.up_bias, entry.diff, entry.diff_b)
                                   for entry in state.modules.values())
            applied.append(applied_lora(spec, state, matched))
        self.report = LoraReport(loras=tuple(applied), merged=True)

    @torch.no_grad()
    def add_rows(self, module: nn.Module, attribute: str, name: str, local: torch.Tensor, start: int,
                 stop: int) -> None:
        """Add the LoRA deltas of rows ``[start, stop)`` of parameter `name` to its filled local shard.

        Args:
            module: the module holding the parameter (its full shape and type decide the delta).
            attribute: the parameter's attribute on `module` (``weight``, ``bias``, ...).
            name: the parameter's official name.
            local: this rank's shard, `[stop - start, ...]`, already holding the checkpoint's rows.
            start: first row of the full tensor that `local` holds; stop: one past its last.
        """
        diffs = self.diffs.get(name, ())
        if diffs and local.ndim == 0:
            for strength, delta in diffs:
                local.add_(delta.to(dtype=local.dtype, device=local.device), alpha=strength)
        elif diffs:
            # on a full-size scratch tensor, so the kernel rounds each element as on the whole parameter
            # (a bf16 add with alpha rounds a vector's tail differently); it is the size of the diffs held
            full = torch.zeros(getattr(module, attribute).shape, dtype=local.dtype, device=local.device)
            full[start:stop] = local
            for strength, delta in diffs:
                full.add_(delta.to(dtype=local.dtype, device=local.device), alpha=strength)
            local.copy_(full[start:stop])
            del full
        pairs = self.pairs.get(name.rpartition(".")[0], ())
        if not pairs or isinstance(module, LowPrecisionLinear):
            return
        dtype, device = local.dtype, local.device
        for pair in pairs:
            if attribute == "weight":
                delta = _delta_rows(module, pair, dtype, device, start, stop)
                local.add_(delta.to(dtype))
            elif attribute == "bias" and pair.up_bias is not None:  # the product on the whole (small) bias
                local.add_((pair.up_bias.to(dtype=dtype, device=device) * pair.scaling)[start:stop])

    def attach_low_precision(self, model: nn.Module) -> None:
        """Give every `LowPrecisionLinear` target its whole factors as ``merged_deltas`` (on its device)."""
        for path, pairs in self.pairs.items():
            module = model.get_submodule(path)
            if not isinstance(module, LowPrecisionLinear):
                continue
            weight = module.weight
            device = (weight.to_local() if hasattr(weight, "to_local") else weight).device
            cast = {"dtype": module.compute_dtype, "device": device}
            for pair in pairs:
                bias = None if pair.up_bias is None else pair.up_bias.to(**cast).contiguous()
                module.merged_deltas.append(
                    (pair.down.to(**cast).contiguous(), pair.up.to(**cast).contiguous(), bias, pair.scaling)
                )


def _delta_rows(module: nn.Module, pair: _Pair, dtype: torch.dtype, device: torch.device, start: int,
                stop: int) -> torch.Tensor:
    """Rows ``[start, stop)`` of ``scaling * up @ down`` in float32 (peft's merge delta, for a conv too)."""
    down = pair.down.to(dtype=dtype, device=device).float()
    up = pair.up.to(dtype=dtype, device=device)[start:stop].float()
    if isinstance(module, nn.Linear):
        return (up @ down) * pair.scaling
    if tuple(module.weight.shape[2:4]) == (1, 1):  # peft's 1x1 conv rule
        product = up.squeeze(3).squeeze(2) @ down.squeeze(3).squeeze(2)
        return product.unsqueeze(2).unsqueeze(3) * pair.scaling
    convolve = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[down.ndim - 2]
    delta = convolve(down.transpose(0, 1), up)
    return delta * pair.scaling if module.groups > 1 else delta.transpose(0, 1) * pair.scaling
