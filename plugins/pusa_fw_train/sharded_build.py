"""Shard-only model builds under FSDP2: a rank never holds the whole base, only its own shards.

`build_sharded_model` builds the backbone's model on the meta device (the adapter's
``build_model(..., device="meta")``), sets up its trainable tensors there (LoRA or full), shards it with the
adapter's ``shard`` (FSDP2 ``fully_shard``), materialises only the rank's local shards
(``model.to_empty(device=...)``) and lets the adapter fill them (``load_shards``: from the checkpoint, each
rank reading its own rows tensor by tensor, or from the seeded random init). Peak host memory per rank is
then about one tensor's shard rows plus its converted copy, never the full model; no whole-model
broadcast or gather runs (the old path loaded the full base on every rank, broadcast it from rank 0 and
sharded it).

LoRA: the factors are injected (peft) on the meta model before sharding, with the target linears' meta
weights swapped for zero-stride CPU stand-ins of the same shape and dtype (`_stand_in_weights`, a few
bytes each), so peft creates and initialises the factors on the CPU exactly as in one process: the same
``torch.manual_seed(config.seed)`` draws, and ``lora.init_from`` copied in. Their full values (rank-r
matrices, small) are kept, the factors go back to meta, and after sharding each rank copies its rows in.
The result equals the one-process model bit for bit (tested with gloo on CPU; the same code runs with
NCCL on CUDA, where ``to_empty`` allocates the shards on the rank's GPU).

Backbones whose adapter has no ``load_shards`` (or whose ``build_model`` takes no ``device``) keep the old
path: the full model on each rank, then `pusa_fw_train.wrapping.wrap_model`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .adapter import TrainAdapter
from .build import set_up_trainable
from .config import TrainConfig
from .lora import resolve_targets
from .memory import build_base, resolve_weights_dtype
from .parallel import ParallelContext
from .wrapping import check_trainable

__all__ = ["build_sharded_model", "can_build_sharded", "copy_rows"]


def can_build_sharded(config: TrainConfig, adapter: TrainAdapter, context: ParallelContext) -> bool:
    """Whether the run builds shard-only: FSDP2 over several ranks and an adapter that can fill shards."""
    import inspect

    if context.strategy != "fsdp" or not context.is_distributed or config.block_swap:
        return False
    if not callable(getattr(adapter, "load_shards", None)):
        return False
    parameters = inspect.signature(adapter.build_model).parameters
    return "device" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def build_sharded_model(
    config: TrainConfig, adapter: TrainAdapter, context: ParallelContext, **shard_options: Any
) -> tuple[nn.Module, list[str], Any]:
    """The run's model, FSDP2-sharded over ``context.mesh["dp"]``, each rank holding only its shards.

    Args:
        config: the run config.
        adapter: the backbone's adapter (with ``load_shards``; see `can_build_sharded`).
        context: a multi-process FSDP2 context.
        shard_options: ``param_dtype`` / ``reduce_dtype`` for the adapter's ``shard``.

    Returns:
        ``(model, targets, report)``: the sharded model (it is also what the step calls), the LoRA target
        paths, and the adapter's load report (e.g. bytes read and kept on this rank).

    Raises:
        InputError: nothing trainable, or ranks that disagree on the model's structure.
    """
    model = build_base(config, adapter, "meta")
    lora_values: dict[str, torch.Tensor] = {}
    if config.mode == "lora":
        with _stand_in_weights(model, config, adapter):
            targets = set_up_trainable(model, config, adapter)
        lora_values = _factors_to_meta(model)
    else:
        targets = set_up_trainable(model, config, adapter)
    check_trainable(model, context)
    model = adapter.shard(model, context.mesh["dp"], reshard_after_forward=True, **shard_options)
    model.to_empty(device=context.device)
    spec = config.model
    report = adapter.load_shards(
        model, spec.path, spec.architecture, spec.init_seed,
        weights_dtype=resolve_weights_dtype(config, adapter),
    )
    for name, full in lora_values.items():
        copy_rows(model.get_parameter(name), full)
    return model, targets, report


@contextmanager
def _stand_in_weights(model: nn.Module, config: TrainConfig, adapter: TrainAdapter) -> Iterator[None]:
    """Swap the meta parameters of the LoRA target linears for zero-stride CPU stand-ins, then back.

    A stand-in has the parameter's shape and dtype but one element of memory, so peft's injection (which
    creates the factors on the base weight's device and dtype) runs on the CPU with its real draws.
    """
    suffixes = config.lora.targets if config.lora.targets is not None else adapter.default_lora_targets
    swapped: list[tuple[nn.Module, str, nn.Parameter]] = []
    for path in resolve_targets(model, tuple(suffixes)):
        module = model.get_submodule(path)
        for name, parameter in list(module.named_parameters(recurse=False)):
            if parameter.is_meta:
                stand_in = torch.zeros(1, dtype=parameter.dtype).expand(parameter.shape)
                module._parameters[name] = nn.Parameter(stand_in, requires_grad=parameter.requires_grad)
                swapped.append((module, name, parameter))
    try:
        yield
    finally:
        for module, name, parameter in swapped:
            requires_grad = module._parameters[name].requires_grad  # peft froze the base
            module._parameters[name] = parameter.requires_grad_(requires_grad)


def _factors_to_meta(model: nn.Module) -> dict[str, torch.Tensor]:
    """The real (CPU) parameters' full values by name; the parameters themselves go back to meta."""
    values: dict[str, torch.Tensor] = {}
    for path, module in model.named_modules():
        for name, parameter in list(module.named_parameters(recurse=False)):
            if parameter.is_meta:
                continue
            values[f"{path}.{name}" if path else name] = parameter.detach().clone()
            meta = torch.empty(parameter.shape, dtype=parameter.dtype, device="meta")
            module._parameters[name] = nn.Parameter(meta, requires_grad=parameter.requires_grad)
    return values


@torch.no_grad()
def copy_rows(parameter: torch.Tensor, full: torch.Tensor) -> None:
    """Copy this rank's rows of `full` into `parameter`'s local shard (a plain tensor takes all of it).

    FSDP2 shards dim 0 in ``torch.chunk`` rows; the rows are found from the DTensor's mesh coordinate.
    """
    from torch.distributed.tensor import DTensor

    if not isinstance(parameter, DTensor):
        parameter.copy_(full)
        return
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    mesh, placements = parameter.device_mesh, parameter.placements
    shape, offset = compute_local_shape_and_global_offset(full.shape, mesh, placements)
    local = parameter.to_local()
    index = tuple(slice(start, start + size) for start, size in zip(offset, shape, strict=True))
    local.copy_(full[index])
