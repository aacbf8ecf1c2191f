"""Full (unsharded) model and optimizer state dicts for checkpoints, under one process, DDP or FSDP2.

Saving: every rank calls `gather_full_state_dict` / `gather_full_optimizer_state`; rank 0 receives the
full tensors on the CPU (keys are the plain module names, without DDP's ``module.`` prefix, so a
checkpoint written under any strategy loads under any other), the other ranks an empty dict. Loading:
every rank reads the same file and calls `load_full_state_dict` / `load_full_optimizer_state`; under
FSDP2 each rank keeps its own shard. These are thin layers over
`torch.distributed.checkpoint.state_dict` that add one-line errors for checkpoints that do not fit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from pusa_fw.errors import CheckpointError

__all__ = [
    "gather_full_optimizer_state",
    "gather_full_state_dict",
    "load_full_optimizer_state",
    "load_full_state_dict",
    "load_rank0_state",
    "rank0_state",
    "trainable_names",
]


def _inner(model: nn.Module) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def trainable_names(model: nn.Module) -> list[str]:
    """Names (as in ``state_dict``) of the parameters that require gradients, without wrapper prefixes."""
    return [name for name, parameter in _inner(model).named_parameters() if parameter.requires_grad]


def _is_main(ctx: Any) -> bool:
    return ctx is None or ctx.is_main


def gather_full_state_dict(model: nn.Module, ctx: Any = None, *, trainable_only: bool = True) -> dict[str, torch.Tensor]:
    """The full model weights on rank 0. Every rank must call it (it is a collective under FSDP2).

    Args:
        model: the (possibly wrapped) model returned by `wrap_model`.
        ctx: the `DistributedContext`, or None for one process.
        trainable_only: keep only the parameters that require gradients (the LoRA factors of a LoRA run).

    Returns:
        On rank 0 ``{name: CPU tensor}`` (detached copies in the parameters' dtype); ``{}`` on other ranks.
    """
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=trainable_only)
    state = get_model_state_dict(model, options=options)
    if not _is_main(ctx):
        return {}
    return {name: tensor.detach().cpu().clone() for name, tensor in state.items()}


def load_full_state_dict(
    model: nn.Module, state_dict: dict[str, torch.Tensor], ctx: Any = None, *, trainable_only: bool = True
) -> None:
    """Load full weights into a (possibly wrapped or sharded) model; every rank passes the same dict.

    Args:
        model: the model returned by `wrap_model`.
        state_dict: ``{name: tensor}`` as written by `gather_full_state_dict`.
        ctx: the `DistributedContext` (unused beyond symmetry with the gather; may be None).
        trainable_only: the dict holds exactly the trainable parameters (otherwise every parameter).

    Raises:
        CheckpointError: names missing from the dict, names the model does not have, or a shape that
            differs; the message names the first few.
    """
    del ctx
    inner = _inner(model)
    expected = trainable_names(inner) if trainable_only else list(inner.state_dict().keys())
    known = set(inner.state_dict().keys())
    missing = [name for name in expected if name not in state_dict]
    unexpected = [name for name in state_dict if name not in known]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint does not fit the model: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}); was it written for another LoRA "
            "config or model?"
        )
    shapes = {name: tuple(tensor.shape) for name, tensor in inner.state_dict().items()}
    for name, tensor in state_dict.items():
        if tuple(tensor.shape) != shapes[name]:
            raise CheckpointError(
                f"checkpoint tensor {name} has shape {tuple(tensor.shape)}, the model expects {shapes[name]}"
            )
    options = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, state_dict, options=options)


def gather_full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, ctx: Any = None) -> dict[str, Any]:
    """The full optimizer state on rank 0, keyed by parameter name (not by position); ``{}`` elsewhere.

    Every rank must call it. The result holds tensors, numbers and strings only, so it can be saved with
    ``torch.save`` and read back with ``torch.load(weights_only=True)``.
    """
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_optimizer_state_dict(model, optimizer, options=options)
    if not _is_main(ctx):
        return {}
    # Without sharding the helper may hand back the live buffers; a checkpoint must be a snapshot.
    return {
        "state": {
            name: {key: _snapshot(value) for key, value in values.items()}
            for name, values in state["state"].items()
        },
        "param_groups": [dict(group) for group in state["param_groups"]],
    }


def _snapshot(value: Any) -> Any:
    return value.detach().cpu().clone() if isinstance(value, torch.Tensor) else value


def load_full_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], ctx: Any = None
) -> None:
    """Load a full optimizer state (from `gather_full_optimizer_state`) on every rank.

    Raises:
        CheckpointError: the state names parameters the optimizer does not hold, or misses some.
    """
    del ctx
    if not isinstance(state, dict) or "state" not in state or "param_groups" not in state:
        raise CheckpointError("optimizer state must be a dict with 'state' and 'param_groups' (a full state dict)")
    saved = {name for group in state["param_groups"] for name in group.get("params", [])}
    wanted = set(trainable_names(model))
    if saved != wanted:
        raise CheckpointError(
            f"optimizer state does not fit: {len(wanted - saved)} parameters missing "
            f"(e.g. {sorted(wanted - saved)[:3]}), {len(saved - wanted)} unknown (e.g. {sorted(saved - wanted)[:3]})"
        )
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def rank0_state(model: nn.Module, rank: int) -> dict[str, torch.Tensor]:
    """Rank 0's own full weights before sharding (references, no copies); ``{}`` on the other ranks.

    Pair it with `load_rank0_state` after ``fully_shard``: only rank 0's values count, so ranks that built
    their copies independently end up with rank 0's weights.
    """
    return get_model_state_dict(model) if rank == 0 else {}


def load_rank0_state(model: nn.Module, reference: dict[str, torch.Tensor]) -> None:
    """Give every rank rank 0's weights (from `rank0_state`), each rank keeping only its FSDP2 shard.

    Every rank calls it. The tensors go out from rank 0 one at a time
    (``StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)``), so a rank's device holds at
    most one full tensor beside its shards, never the whole model.
    """
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, reference, options=options)
