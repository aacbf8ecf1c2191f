"""Wrapping a model for data-parallel training under a `ParallelContext`: DDP or FSDP2, and gradient sync.

`wrap_model` puts the model on the rank's device and wraps it: DDP for a LoRA (only trainable parameters
are reduced), FSDP2 through the backbone adapter's ``shard`` (e.g. ``fully_shard`` per block, then the
root) for a full fine-tune. Build the optimizer *after* wrapping (FSDP2 replaces the parameters by sharded
ones). `gradient_sync` turns the reduction off for accumulation micro-steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn

from pusa_fw.errors import InputError

from .parallel import ParallelContext, Strategy, check_strategy

__all__ = ["check_trainable", "gradient_sync", "unwrap_model", "wrap_model"]


def _trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [parameter for parameter in model.parameters() if parameter.requires_grad]


def _require_trainable(model: nn.Module) -> None:
    if not _trainable_parameters(model):
        raise InputError("the model has no trainable parameters (requires_grad); inject LoRA or unfreeze it")


def check_trainable(model: nn.Module, ctx: ParallelContext) -> None:
    """Something to train, and (several ranks) the same parameter names, shapes and trainable flags on all.

    Raises:
        InputError: nothing trainable, or ranks that built different models.
    """
    _require_trainable(model)
    if ctx.is_distributed:
        ctx.check_same_on_all_ranks(
            "model structure (parameter names, shapes, trainable flags)",
            [(name, tuple(p.shape), p.requires_grad) for name, p in model.named_parameters()],
        )


def wrap_model(
    model: nn.Module,
    ctx: ParallelContext,
    strategy: Strategy | str | None = None,
    *,
    shard: Callable[..., nn.Module] | None = None,
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype | None = None,
    reshard_after_forward: bool = True,
) -> nn.Module:
    """Move ``model`` to the rank's device and wrap it for data-parallel training.

    Args:
        model: the model (possibly with LoRA layers injected and its base frozen).
        ctx: from `init_distributed`.
        strategy: "none", "ddp" or "fsdp"; default ``ctx.strategy``.
        shard: FSDP2 only: ``shard(model, mesh, **options)`` (the backbone adapter's ``shard``).
        param_dtype: FSDP2 compute dtype of the sharded parameters (e.g. bf16); None keeps fp32.
        reduce_dtype: FSDP2 gradient reduce dtype; None = ``param_dtype``.
        reshard_after_forward: FSDP2: free the gathered block weights after each block's forward.

    Returns:
        The module to call in the training step (``model(latents, sigmas, context)``). Under DDP it is
        a `DistributedDataParallel` (the original is `unwrap_model(wrapped)`); under FSDP2 the model itself,
        sharded in place. With one process no wrapper is added.

    Raises:
        InputError: unknown strategy, nothing trainable, or DDP/FSDP2 options that do not fit.
    """
    strategy = ctx.strategy if strategy is None else strategy
    check_strategy(strategy)
    _require_trainable(model)
    if strategy != "fsdp" and (param_dtype is not None or reduce_dtype is not None):
        raise InputError(f"param_dtype/reduce_dtype are FSDP2 options; strategy {strategy!r} does not take them")
    if not ctx.is_distributed or strategy == "none":
        return model.to(ctx.device)
    check_trainable(model, ctx)
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        model = model.to(ctx.device)
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        # DDP broadcasts rank 0's parameters and buffers once here, then all-reduces only the gradients
        # of parameters that require them (the LoRA factors for a LoRA run).
        return DistributedDataParallel(model, device_ids=device_ids)
    if shard is None:
        raise InputError("FSDP2 needs the backbone's shard function (its training adapter's shard); pass shard=")
    model = model.to(ctx.device)
    _broadcast_parameters(model)
    return shard(
        model,
        ctx.mesh["dp"],
        param_dtype=param_dtype,
        reduce_dtype=reduce_dtype,
        reshard_after_forward=reshard_after_forward,
    )


@torch.no_grad()
def _broadcast_parameters(model: nn.Module) -> None:
    """Give every rank rank 0's weights before sharding (random LoRA init may differ per rank)."""
    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.data, src=0)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module under a DDP wrapper (an FSDP2 model is sharded in place and returned as is)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


@contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Turn gradient reduction off for accumulation micro-steps (on for the last one).

    Under DDP this is ``no_sync``; under FSDP2 ``set_requires_gradient_sync``; otherwise a no-op.
    """
    from torch.distributed.fsdp import FSDPModule
    from torch.nn.parallel import DistributedDataParallel

    if enabled:
        yield
    elif isinstance(model, DistributedDataParallel):
        with model.no_sync():
            yield
    elif isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield
