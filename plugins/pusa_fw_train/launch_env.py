"""The launch environment of a distributed run: torchrun's variables, the strategies, the mesh layout and
the rank's device, each checked with a one-line `InputError` (used by `pusa_fw_train.parallel`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

import torch

from pusa_fw.errors import InputError

__all__ = [
    "STRATEGIES",
    "Strategy",
    "check_strategy",
    "env_int",
    "mesh_layout",
    "process_group_device",
    "rank_device",
]

Strategy = Literal["none", "ddp", "fsdp"]
STRATEGIES: tuple[str, ...] = ("none", "ddp", "fsdp")


def env_int(name: str, default: int | None = None) -> int:
    """The integer environment variable `name` (torchrun's), or `default` when unset (None: required)."""
    raw = os.environ.get(name)
    if raw is None:
        if default is None:
            raise InputError(f"{name} is not set; launch with torchrun, which sets RANK/WORLD_SIZE/LOCAL_RANK")
        return default
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"{name}={raw!r} is not an integer; launch with torchrun") from None


def check_strategy(strategy: str) -> None:
    """Raise `InputError` for a strategy that is not one of `STRATEGIES`."""
    if strategy not in STRATEGIES:
        raise InputError(f"unknown distributed strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")


def mesh_layout(mesh_shape: Mapping[str, int] | None, world_size: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Names and sizes of the mesh dimensions (default ``{"dp": world_size}``), checked against the world."""
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


def rank_device(local_rank: int) -> torch.device:
    """The local rank's GPU (made current), or the CPU without CUDA.

    A rank that sees exactly one GPU takes it whatever its local rank: per-task binding (SLURM
    ``--gpus-per-task=1``, or a launcher that sets ``CUDA_VISIBLE_DEVICES`` per rank) gives every rank its
    own GPU as device 0. With several visible GPUs the local rank indexes them (torchrun on a node).

    Raises:
        InputError: several GPUs visible but fewer than ``local_rank + 1`` (more ranks than GPUs).
    """
    if not torch.cuda.is_available():
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if 1 < count <= local_rank:
        raise InputError(
            f"local rank {local_rank} has no GPU: {count} are visible; use torchrun --nproc_per_node {count} "
            "or fewer, or bind one GPU per rank (CUDA_VISIBLE_DEVICES / --gpus-per-task=1)"
        )
    index = local_rank if count > 1 else 0
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def process_group_device(device: torch.device) -> dict[str, torch.device]:
    """``init_process_group`` keywords for the rank's `device`: ``{"device_id": device}`` on CUDA, else ``{}``.

    Binding the NCCL group to the device initialises it eagerly on that GPU (and lets barriers know their
    device) instead of guessing from the current device at the first collective.
    """
    return {"device_id": device} if device.type == "cuda" else {}
