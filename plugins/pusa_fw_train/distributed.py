"""Training past one process: torchrun environment, device mesh, DDP / FSDP2 wrapping, gradient sync.

The trainer calls three things, in this order, and nothing else changes between one process and many:

1. `init_distributed(strategy)` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``),
   starts the process group (gloo on CPU, nccl on CUDA) and builds a `DeviceMesh` with a named ``"dp"``
   dimension (more named dimensions can be added later). World size 1 starts no process group at all.
2. `wrap_model(model, ctx, strategy)` puts the model on the rank's device and wraps it: DDP for a LoRA
   (only trainable parameters are reduced), FSDP2 (the backbone adapter's ``shard``, e.g. ``fully_shard``
   per block, then the root) for a full fine-tune or a LoRA whose frozen base does not fit one device.
   Build the optimizer *after* wrapping (FSDP2 replaces the parameters by sharded ones).
3. Each global batch is split with `pusa_fw_train.sharding.shard_global_batch`, which gives every
   rank the same number of samples and loss weights that make the mean over ranks equal the
   single-process loss of the global batch.

Checkpoint helpers (full state dicts gathered on rank 0, loaded back on every rank) live in
`pusa_fw_train.state_dicts`; they are re-exported here.

A bad layout (unknown strategy, ``strategy="none"`` under torchrun, an inconsistent environment, more
local ranks than GPUs, ranks that disagree) raises the same one-line `InputError` on every rank instead
of hanging in a collective.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn

from pusa_fw.errors import InputError
from pusa_fw_train.rank_context import DistributedContext
from pusa_fw_train.sharding import RankShard, shard_global_batch
from pusa_fw_train.state_dicts import (
    gather_full_optimizer_state,
    gather_full_state_dict,
    load_full_optimizer_state,
    load_full_state_dict,
)

__all__ = [
    "STRATEGIES",
    "DistributedContext",
    "RankShard",
    "Strategy",
    "gather_full_optimizer_state",
    "gather_full_state_dict",
    "gradient_sync",
    "init_distributed",
    "load_full_optimizer_state",
    "load_full_state_dict",
    "shard_global_batch",
    "unwrap_model",
    "wrap_model",
]

Strategy = Literal["none", "ddp", "fsdp"]
STRATEGIES: tuple[str, ...] = ("none", "ddp", "fsdp")
DEFAULT_TIMEOUT = timedelta(minutes=10)


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        if default is None:
            raise InputError(f"{name} is not set; launch with torchrun, which sets RANK/WORLD_SIZE/LOCAL_RANK")
        return default
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"{name}={raw!r} is not an integer; launch with torchrun") from None


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise InputError(f"unknown distributed strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")


def _mesh_layout(mesh_shape: Mapping[str, int] | None, world_size: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    layout = dict(mesh_shape) if mesh_shape is not None else {"dp": world_size}
    if "dp" not in layout:
        raise InputError(f"the device mesh needs a 'dp' dimension, got {sorted(layout)}")
    sizes = tuple(int(size) for size in layout.values())
    product = 1
    for size in sizes:
        product *= size
    if min(sizes) < 1 or product != world_size:
        raise InputError(
            f"mesh shape {layout} holds {product} ranks but the world size is {world_size}; "
            f"make the sizes multiply to {world_size}"
        )
    return tuple(layout), sizes


def _rank_device(local_rank: int) -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise InputError(
            f"local rank {local_rank} has no GPU (this node has {count}); "
            f"use torchrun --nproc_per_node {count} or fewer"
        )
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init_distributed(
    strategy: Strategy | str = "none",
    *,
    mesh_shape: Mapping[str, int] | None = None,
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> DistributedContext:
    """Set up this process from torchrun's environment.

    Args:
        strategy: "none" (one process), "ddp" or "fsdp". "ddp"/"fsdp" also run with one process.
        mesh_shape: named mesh dimensions and sizes, default ``{"dp": world_size}``; sizes must multiply
            to the world size.
        timeout: how long a collective may wait for a missing rank before failing (no silent hang).

    Returns:
        The context; use it as a context manager (or call ``close()``) to end the process group.

    Raises:
        InputError: unknown strategy, "none" with several processes, an inconsistent torchrun
            environment, a mesh that does not fit the world size, or more local ranks than GPUs.
    """
    _check_strategy(strategy)
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK") if world_size > 1 else _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world_size < 1 or not 0 <= rank < world_size or not 0 <= local_rank <= rank:
        raise InputError(
            f"inconsistent launch environment RANK={rank} LOCAL_RANK={local_rank} WORLD_SIZE={world_size}; "
            "launch with torchrun"
        )
    if world_size > 1 and strategy == "none":
        raise InputError(
            f"strategy 'none' was given but {world_size} processes were launched; use ddp or fsdp "
            "(or launch a single process)"
        )
    names, sizes = _mesh_layout(mesh_shape, world_size)
    device = _rank_device(local_rank)
    if world_size == 1:
        return DistributedContext(rank, 1, local_rank, device, None, strategy)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, timeout=timeout)
        owns = True
    elif dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise InputError(
            f"an existing process group (rank {dist.get_rank()} of {dist.get_world_size()}) does not match "
            f"RANK={rank} WORLD_SIZE={world_size}"
        )
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, sizes, mesh_dim_names=names)
    context = DistributedContext(rank, world_size, local_rank, device, mesh, strategy, owns)
    if owns:
        atexit.register(context.close, wait_for_all=False)
    context.check_same_on_all_ranks("distributed strategy and mesh", (strategy, names, sizes))
    return context


def _trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [parameter for parameter in model.parameters() if parameter.requires_grad]


def wrap_model(
    model: nn.Module,
    ctx: DistributedContext,
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
    _check_strategy(strategy)
    if not _trainable_parameters(model):
        raise InputError("the model has no trainable parameters (requires_grad); inject LoRA or unfreeze it")
    if strategy != "fsdp" and (param_dtype is not None or reduce_dtype is not None):
        raise InputError(f"param_dtype/reduce_dtype are FSDP2 options; strategy {strategy!r} does not take them")
    if not ctx.is_distributed or strategy == "none":
        return model.to(ctx.device)
    ctx.check_same_on_all_ranks(
        "model structure (parameter names, shapes, trainable flags)",
        [(name, tuple(p.shape), p.requires_grad) for name, p in model.named_parameters()],
    )
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
