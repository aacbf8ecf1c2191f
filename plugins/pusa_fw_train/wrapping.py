"""Wrapping a model for data-parallel training under a `ParallelContext`: DDP or FSDP2, and gradient sync.

`wrap_model` puts the model on the rank's device and wraps it: DDP for a LoRA (only trainable parameters
are reduced; the frozen base and the buffers are neither broadcast at start-up nor before each forward),
FSDP2 through the backbone adapter's ``shard`` (e.g. ``fully_shard`` per block, then the root) for a full
fine-tune. Build the optimizer *after* wrapping (FSDP2 replaces the parameters by sharded ones).

`gradient_sync` turns DDP's all-reduce off for accumulation micro-steps. FSDP2 reduce-scatters on every
micro-step instead (as torchtitan does): its sharded gradients accumulate at 1/N size, while skipping the
reduction would keep an unsharded (fp32 under ``reduce_dtype``) gradient of every parameter on every rank,
56 GB per GPU for a 14B full fine-tune.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

try:  # public FSDP2 names from torch 2.6 on (pyproject's floor; tests/test_torch_floor.py)
    from torch.distributed.fsdp import FSDPModule
except ImportError as error:  # pragma: no cover - only on torch < 2.6
    raise ImportError(
        f"pusa-fw training needs torch>=2.6 (FSDP2's public torch.distributed.fsdp), found {torch.__version__}; "
        "upgrade torch"
    ) from error

from pusa_fw.errors import InputError

from .parallel import ParallelContext, Strategy, check_strategy

__all__ = ["check_trainable", "gradient_sync", "ignore_frozen_in_ddp", "unwrap_model", "wrap_model"]


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
        model = model.to(ctx.device)
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        ignore_frozen_in_ddp(model)
        # DDP broadcasts rank 0's trainable parameters once here (the LoRA factors), then all-reduces
        # their gradients; the frozen base and the buffers are the same on every rank by construction.
        # broadcast_buffers=False: no buffer broadcast before each forward (newer torch calls the flag
        # deprecated but keeps it, and its replacement still syncs at init).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
            return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)
    if shard is None:
        raise InputError("FSDP2 needs the backbone's shard function (its training adapter's shard); pass shard=")
    from .state_dicts import load_rank0_state, rank0_state

    reference = rank0_state(model, ctx.rank)
    # fully_shard moves each group's tensors to the mesh's device as it shards them, so the device never
    # holds more than the shards plus one group's full tensors (no whole-model .to(device) first).
    sharded = shard(
        model,
        ctx.mesh["dp"],
        param_dtype=param_dtype,
        reduce_dtype=reduce_dtype,
        reshard_after_forward=reshard_after_forward,
    )
    _move_unsharded(sharded, ctx.device)
    load_rank0_state(sharded, reference)
    return sharded


@torch.no_grad()
def _move_unsharded(model: nn.Module, device: torch.device) -> None:
    """Move the tensors a backbone's ``shard`` left out of every FSDP2 group (plain, not DTensor)."""
    from torch.distributed.tensor import DTensor

    for module in model.modules():
        for name, parameter in module._parameters.items():
            if parameter is not None and not isinstance(parameter, DTensor) and parameter.device != device:
                module._parameters[name] = nn.Parameter(parameter.to(device), parameter.requires_grad)
        for name, buffer in module._buffers.items():
            if buffer is not None and not isinstance(buffer, DTensor) and buffer.device != device:
                module._buffers[name] = buffer.to(device)


def ignore_frozen_in_ddp(model: nn.Module) -> list[str]:
    """Make DDP skip the frozen parameters and every buffer (no start-up broadcast of the base).

    Merged with names already set on ``model`` (block swap sets its swapped tensors; a second
    ``_set_params_and_buffers_to_ignore_for_model`` call would overwrite them). Returns the sorted list.
    """
    names = set(getattr(model, "_ddp_params_and_buffers_to_ignore", ()))
    names.update(name for name, parameter in model.named_parameters() if not parameter.requires_grad)
    names.update(name for name, _ in model.named_buffers())
    ignored = sorted(names)
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignored)
    return ignored


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module under a DDP wrapper (an FSDP2 model is sharded in place and returned as is)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


@contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Turn DDP's gradient all-reduce off for accumulation micro-steps (on for the last one).

    Under DDP this is ``no_sync`` (the unreduced gradients are the LoRA factors', small). An FSDP2 model
    (`FSDPModule`) keeps reduce-scattering on every micro-step: its gradients then accumulate sharded, at
    1/N of the parameter size, never as unsharded per-parameter gradients (see the module docstring).
    Otherwise a no-op.
    """
    if enabled or isinstance(model, FSDPModule) or not isinstance(model, DistributedDataParallel):
        yield
        return
    with model.no_sync():
        yield
