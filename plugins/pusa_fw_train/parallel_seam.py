"""The trainer's one seam to distribution: a small context over `pusa_fw_train.distributed`.

With one process (or ``distributed = "none"``) nothing distributed is imported or started: the model is
moved to the device, every global batch is the rank's batch, and tensors are plain. Under torchrun the
context calls `distributed.init_distributed`, `wrap_model` (DDP for a LoRA, FSDP2 for a full fine-tune
by default), `sharding.shard_global_batch` and `global_mean_loss`, and gathers sharded tensors and every
rank's RNG states for checkpoints.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pusa_fw.errors import InputError

from .config import TrainConfig

__all__ = ["TrainContext", "local_context", "start_distributed"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrainContext:
    """Rank, device and the distributed operations the trainer needs (no-ops for one process)."""

    rank: int
    world_size: int
    device: torch.device
    inner: Any = None  # the DistributedContext, when distributed

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module, shard: Callable[..., nn.Module] | None = None) -> nn.Module:
        """The module to call in the step (DDP / FSDP2 wrapped when distributed; `shard` does FSDP2)."""
        if self.inner is None:
            return model.to(self.device)
        from .distributed import wrap_model

        return wrap_model(model, self.inner, shard=shard)

    def shard(self, global_indices: Sequence[int]) -> tuple[list[int], LossFn | None]:
        """This rank's indices of a global batch and, when distributed, the loss that averages over ranks."""
        if self.inner is None:
            return list(global_indices), None
        from .sharding import global_mean_loss, shard_global_batch

        shard = shard_global_batch(global_indices, self.rank, self.world_size)
        return list(shard.indices), lambda terms, mask: global_mean_loss(terms, shard, mask)

    def gradient_sync(self, model: nn.Module, enabled: bool) -> contextlib.AbstractContextManager[None]:
        if self.inner is None:
            return contextlib.nullcontext()
        from .distributed import gradient_sync

        return gradient_sync(model, enabled)

    def mean_over_ranks(self, value: torch.Tensor) -> float:
        """The mean of a scalar over ranks, as a float (every rank must call it; syncs with the host)."""
        if self.inner is None:
            return float(value)
        return self.inner.mean_over_ranks(value)

    def full_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """The whole tensor on the CPU (gathers an FSDP2 shard; every rank must call it)."""
        full = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
        return full.detach().cpu()

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
        """Every rank's RNG states on rank 0 (this rank's alone for one process)."""
        if self.inner is None:
            return states
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, states)
        return {key: value for rank_states in gathered for key, value in rank_states.items()}


def local_context(config: TrainConfig) -> TrainContext:
    """One process on ``config.device``; refuses to run under a multi-process launch."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        raise InputError(
            f"distributed='none' but {world} processes were launched; set distributed to auto, ddp or fsdp"
        )
    return TrainContext(rank=0, world_size=1, device=torch.device(config.device))


def start_distributed(config: TrainConfig) -> TrainContext:
    """Start (or skip, for one process) the process group for `config.distributed`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return local_context(config)
    try:
        from .distributed import init_distributed
    except ModuleNotFoundError as error:
        raise InputError(f"multi-process training needs pusa_fw_train.distributed ({error})") from None
    strategy = config.distributed
    if strategy == "auto":
        strategy = "ddp" if config.mode == "lora" else "fsdp"
    inner = init_distributed(strategy)
    return TrainContext(rank=inner.rank, world_size=inner.world_size, device=inner.device, inner=inner)
