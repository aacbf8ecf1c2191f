"""`DistributedContext`: where one process stands in a (possibly single-process) training run.

Built by `pusa_fw_train.distributed.init_distributed`; holds the rank, the device, the `DeviceMesh`
and the few collectives the trainer needs besides the model's own (logging means, consistency checks,
closing the process group).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from pusa_fw.errors import InputError

__all__ = ["DistributedContext"]


@dataclass
class DistributedContext:
    """Where this process stands in a (possibly single-process) run.

    Attributes:
        rank: global rank, 0 .. world_size - 1.
        world_size: number of processes.
        local_rank: rank on this node (selects the GPU).
        device: the device this rank computes on.
        mesh: the `DeviceMesh` with a ``"dp"`` dimension, or None when world_size is 1.
        strategy: "none", "ddp" or "fsdp".
        owns_process_group: True if `init_distributed` started the process group (and `close` ends it).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    mesh: Any = None
    strategy: str = "none"
    owns_process_group: bool = field(default=False, repr=False)

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that writes checkpoints and logs."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """True when there is more than one process (and so a process group)."""
        return self.world_size > 1

    def rank_seed(self, seed: int) -> int:
        """A seed for this rank's own random streams, distinct per rank and reproducible per run.

        Use it for draws that may differ between ranks (e.g. dropout); draws that must equal the
        single-process run (noise and sigmas of a sample) should be keyed by the sample, not the rank.
        """
        return (int(seed) + 0x9E3779B1 * self.rank) % (2**63)

    def barrier(self) -> None:
        """Wait for every rank (no-op for one process)."""
        if self.is_distributed:
            dist.barrier()

    def mean_over_ranks(self, value: float | torch.Tensor) -> float:
        """Average a scalar over ranks (for logging); every rank must call it."""
        tensor = torch.as_tensor(value, dtype=torch.float64).detach().reshape(1).clone()
        if self.is_distributed:
            tensor = tensor.to(self.device)
            dist.all_reduce(tensor)
            tensor /= self.world_size
        return float(tensor.item())

    def check_same_on_all_ranks(self, what: str, value: Any) -> None:
        """Raise the same `InputError` on every rank when ranks disagree about ``value`` (e.g. a config).

        Args:
            what: a name for the message (``"training config"``).
            value: any picklable value that must be equal on every rank.
        """
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

    def close(self, *, wait_for_all: bool = True) -> None:
        """End the process group if this context started it (by default after every rank got here).

        The mesh reference is dropped and garbage collected right away, so gloo's worker threads are
        joined while the interpreter is alive (left to interpreter exit they can abort the process).
        Drop the wrapped model before closing for the same reason. A context that is never closed is
        closed at exit (without waiting for the other ranks, which may have failed).
        """
        self.mesh = None
        if self.owns_process_group and dist.is_initialized():
            if wait_for_all:
                dist.barrier()
            dist.destroy_process_group()
            gc.collect()
        self.owns_process_group = False

    def __enter__(self) -> DistributedContext:  # noqa: PYI034 (Python 3.10 has no typing.Self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
