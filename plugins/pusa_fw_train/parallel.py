"""`ParallelContext`: the one object that knows where a process stands in a run (mesh, rank, device,
strategy) and does the few distributed operations the trainer, its checkpoints and sharding need.

In the spirit of torchtitan's ``ParallelDims``: `init_distributed(strategy)` reads torchrun's environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), starts the process group (gloo on CPU, nccl on CUDA, with a
configurable collective timeout) and builds a `DeviceMesh` with a named ``"dp"`` dimension; world size 1
starts nothing and every operation is a no-op or a plain copy. The context then

- is what `pusa_fw_train.wrapping.wrap_model` wraps the model for: DDP for a LoRA (only trainable
  parameters are reduced), FSDP2 through the backbone adapter's ``shard`` for a full fine-tune;
- splits each global batch (`ParallelContext.split`, over `pusa_fw_train.sharding.shard_global_batch`) and
  returns the loss whose mean over ranks is the single-process loss;
- averages logged scalars, gathers RNG states and full tensors for checkpoints, and brackets rank-0 work
  with barriers (`ParallelContext.main_rank_work`).

A bad layout (unknown strategy, ``strategy="none"`` under torchrun, an inconsistent environment, more
local ranks than GPUs, ranks that disagree) raises the same one-line `InputError` on every rank instead of
hanging in a collective.
"""

from __future__ import annotations

import atexit
import gc
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from pusa_fw.errors import InputError

from .launch_env import STRATEGIES, Strategy, check_strategy, env_int, mesh_layout, rank_device
from .sharding import global_mean_loss, shard_global_batch

__all__ = [
    "DEFAULT_HOST_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "STRATEGIES",
    "ParallelContext",
    "Strategy",
    "check_strategy",
    "init_distributed",
    "parallel_context",
]

DEFAULT_TIMEOUT = timedelta(minutes=10)
DEFAULT_HOST_TIMEOUT = timedelta(hours=2)
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class ParallelContext:
    """Where this process stands in a (possibly single-process) run, and its collectives.

    Attributes:
        rank: global rank, 0 .. world_size - 1.
        world_size: number of processes.
        local_rank: rank on this node (selects the GPU).
        device: the device this rank computes on.
        mesh: the `DeviceMesh` with a ``"dp"`` dimension, or None when world_size is 1.
        strategy: "none", "ddp" or "fsdp".
        timeout: how long a collective waits for a missing rank.
        owns_process_group: True if `init_distributed` started the process group (and `close` ends it).
        host_group: a gloo group over every rank with its own (long) timeout, for host-side waits and small
            CPU collectives that must not block the device stream or trip the NCCL watchdog (None for one
            process).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    mesh: Any = None
    strategy: str = "none"
    timeout: timedelta = DEFAULT_TIMEOUT
    owns_process_group: bool = field(default=False, repr=False)
    host_group: Any = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that writes checkpoints, logs and renders."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """True when there is more than one process (and so a process group)."""
        return self.world_size > 1

    def rank_seed(self, seed: int) -> int:
        """A seed for this rank's own random streams (e.g. dropout), distinct per rank, reproducible per run.

        Draws that must equal the single-process run (noise and sigmas of a sample) are keyed by the
        sample, not the rank.
        """
        return (int(seed) + 0x9E3779B1 * self.rank) % (2**63)

    def barrier(self) -> None:
        """Wait for every rank (no-op for one process)."""
        if self.is_distributed:
            dist.barrier()

    def host_barrier(self) -> None:
        """Wait for every rank on the host (`host_group`, gloo): no device work, the long host timeout."""
        if self.is_distributed:
            dist.barrier(group=self.host_group)

    @contextmanager
    def main_rank_work(self) -> Iterator[bool]:
        """Bracket rank-0-only work (a checkpoint write, a render) with barriers; yields `is_main`.

        The other ranks wait in the closing barrier instead of running into the next collective. Both
        barriers are host barriers on the gloo `host_group`, whose timeout (``main_rank_timeout_s``) is
        set for a long save or render: an NCCL barrier would be bound by the collective timeout and the
        NCCL watchdog instead, which aborts the job when rank 0 takes longer.
        """
        self.host_barrier()
        try:
            yield self.is_main
        finally:
            self.host_barrier()

    def broadcast_object(self, value: Any, *, host: bool = False) -> Any:
        """Rank 0's `value` on every rank (a small picklable object, e.g. a path; every rank calls it).

        Args:
            value: rank 0's object (the other ranks' values are ignored).
            host: broadcast over the gloo `host_group` (its long timeout: rank 0 may be slow to get there).
        """
        if not self.is_distributed:
            return value
        shared = [value]
        dist.broadcast_object_list(shared, src=0, group=self.host_group if host else None)
        return shared[0]

    def mean_over_ranks(self, value: float | torch.Tensor) -> float:
        """Average a scalar over ranks (for logging); every rank must call it; syncs with the host."""
        tensor = torch.as_tensor(value, dtype=torch.float64).detach().reshape(1).clone()
        if self.is_distributed:
            tensor = tensor.to(self.device)
            dist.all_reduce(tensor)
            tensor /= self.world_size
        return float(tensor.item())

    def check_same_on_all_ranks(self, what: str, value: Any) -> None:
        """Raise the same `InputError` on every rank when ranks disagree about ``value`` (e.g. a config)."""
        if not self.is_distributed:
            return
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        differing = [rank for rank, other in enumerate(gathered) if other != gathered[0]]
        if differing:
            raise InputError(
                f"{what} differs between ranks (rank 0 vs ranks {differing}); start every rank with the "
                "same arguments"
            )

    def split(self, global_indices: Sequence[int]) -> tuple[list[int], LossFn | None]:
        """This rank's indices of a global batch and, when distributed, the loss averaging over ranks."""
        if not self.is_distributed:
            return list(global_indices), None
        shard = shard_global_batch(global_indices, self.rank, self.world_size)
        return list(shard.indices), lambda terms, mask: global_mean_loss(terms, shard, mask)

    def full_tensor(self, tensor: torch.Tensor) -> torch.Tensor | None:
        """The whole tensor as a CPU copy on rank 0; None on the other ranks (every rank calls it).

        An FSDP2 shard (DTensor) is gathered on its device first, on every rank (the gather is the
        collective); only rank 0, the rank that writes checkpoints, then copies it to host memory, so a
        save costs host RAM on one rank instead of on each.
        """
        full = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
        if not self.is_main:
            return None
        return full.detach().to("cpu", copy=True)

    @torch.no_grad()
    def load_tensor(self, parameter: torch.Tensor, value: torch.Tensor) -> None:
        """Copy a full tensor into a (possibly sharded) parameter."""
        if hasattr(parameter, "device_mesh"):
            from torch.distributed.tensor import distribute_tensor

            value = distribute_tensor(value.to(parameter.device), parameter.device_mesh, parameter.placements)
            parameter.copy_(value)
        else:
            parameter.copy_(value.to(parameter.device, parameter.dtype))

    def gather_rng(self, states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every rank's RNG states on every rank (this rank's alone for one process)."""
        if not self.is_distributed:
            return states
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, states)
        return {key: value for rank_states in gathered for key, value in rank_states.items()}

    def close(self, *, wait_for_all: bool = True) -> None:
        """End the process group if this context started it (by default after every rank got here).

        The mesh reference is dropped and garbage collected right away, so gloo's worker threads are
        joined while the interpreter is alive. Drop the wrapped model before closing for the same reason.
        A context that is never closed is closed at exit (without waiting for the other ranks).
        """
        self.mesh = None
        self.host_group = None
        if self.owns_process_group and dist.is_initialized():
            if wait_for_all:
                dist.barrier()
            dist.destroy_process_group()
            gc.collect()
        self.owns_process_group = False

    def __enter__(self) -> ParallelContext:  # noqa: PYI034 (Python 3.10 has no typing.Self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def parallel_context(
    strategy: str,
    mode: str,
    device: str,
    timeout: timedelta = DEFAULT_TIMEOUT,
    host_timeout: timedelta = DEFAULT_HOST_TIMEOUT,
) -> ParallelContext:
    """The context of a training run: one process on `device`, or torchrun's ranks under `strategy`.

    Args:
        strategy: the config's ``distributed``: "auto" (DDP for a LoRA, FSDP2 for a full run), "none",
            "ddp" or "fsdp".
        mode: "lora" or "full" (resolves "auto").
        device: the device of a single-process run.
        timeout: the collective timeout of a multi-process run.
        host_timeout: the timeout of its host group (`ParallelContext.host_group`).

    Raises:
        InputError: ``"none"`` under a multi-process launch, or a bad launch environment.
    """
    world = env_int("WORLD_SIZE", 1)
    if world > 1 and strategy == "none":
        raise InputError(
            f"distributed='none' but {world} processes were launched; set distributed to auto, ddp or fsdp"
        )
    if world == 1:
        return ParallelContext(0, 1, 0, torch.device(device), timeout=timeout)
    if strategy == "auto":
        strategy = "ddp" if mode == "lora" else "fsdp"
    return init_distributed(strategy, timeout=timeout, host_timeout=host_timeout)


def init_distributed(
    strategy: Strategy | str = "none",
    *,
    mesh_shape: Mapping[str, int] | None = None,
    timeout: timedelta = DEFAULT_TIMEOUT,
    device: torch.device | str | None = None,
    host_timeout: timedelta = DEFAULT_HOST_TIMEOUT,
) -> ParallelContext:
    """Set up this process from torchrun's environment.

    Args:
        strategy: "none" (one process), "ddp" or "fsdp". "ddp"/"fsdp" also run with one process.
        mesh_shape: named mesh dimensions and sizes, default ``{"dp": world_size}``; sizes must multiply
            to the world size.
        timeout: how long a collective may wait for a missing rank before failing (no silent hang).
        device: the device of a single-process run (default: the local rank's GPU, else the CPU); a
            multi-process run always takes the local rank's GPU (or the CPU without CUDA).
        host_timeout: the timeout of the gloo `ParallelContext.host_group` (waits for rank-0 work).

    Returns:
        The context; use it as a context manager (or call ``close()``) to end the process group.

    Raises:
        InputError: unknown strategy, "none" with several processes, an inconsistent torchrun
            environment, a mesh that does not fit the world size, or more local ranks than GPUs.
    """
    check_strategy(strategy)
    world_size = env_int("WORLD_SIZE", 1)
    rank = env_int("RANK") if world_size > 1 else env_int("RANK", 0)
    local_rank = env_int("LOCAL_RANK", rank)
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
    names, sizes = mesh_layout(mesh_shape, world_size)
    device = rank_device(local_rank) if device is None or world_size > 1 else torch.device(device)
    if world_size == 1:
        return ParallelContext(rank, 1, local_rank, device, None, strategy, timeout)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        bound = {"device_id": device} if device.type == "cuda" else {}  # eager NCCL init on this rank's GPU
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, timeout=timeout, **bound)
        owns = True
    elif dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise InputError(
            f"an existing process group (rank {dist.get_rank()} of {dist.get_world_size()}) does not match "
            f"RANK={rank} WORLD_SIZE={world_size}"
        )
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, sizes, mesh_dim_names=names)
    host_group = dist.new_group(backend="gloo", timeout=host_timeout)  # every rank, same order
    context = ParallelContext(rank, world_size, local_rank, device, mesh, strategy, timeout, owns, host_group)
    if owns:
        atexit.register(context.close, wait_for_all=False)
    context.check_same_on_all_ranks("distributed strategy and mesh", (strategy, names, sizes))
    return context
