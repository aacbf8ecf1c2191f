"""Start the process group of a torchrun job for a `ParallelLayout` and make a backbone parallel.

`init_parallel` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), checks the layout
against the world size *before* any collective (so a bad layout fails on every rank at once, no hang),
and builds the ``(replica, cfg, ulysses)`` `DeviceMesh`. `parallelize_backbone` then applies, to every
`WanDiT` in the backbone (one, or both Wan2.2 experts), sequence parallelism over the ``ulysses``
dimension and FSDP2 over all ranks, and wraps the result for CFG parallel. The sampler is untouched:
every rank runs the same plan on the same noise and gets the same full velocity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from pusa_fw.backbone import Backbone

from pusa_fw_wan.parallel.cfg import CfgParallelBackbone
from pusa_fw_wan.parallel.fsdp import shard_dit, shard_text_encoder
from pusa_fw_wan.parallel.layout import ParallelLayout
from pusa_fw_wan.parallel.sequence import enable_sequence_parallel
from pusa_fw_wan.parallel.ulysses import CommStats

__all__ = [
    "ParallelRuntime",
    "environment_world_size",
    "init_parallel",
    "parallelize_backbone",
    "parallelize_text_encoder",
]


def environment_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun, or 1 outside a launched job."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class ParallelRuntime:
    """A started layout: the meshes and groups this rank belongs to.

    Attributes:
        layout: the validated layout.
        rank: global rank; world_size: processes in the job.
        device: this rank's device (``cuda:LOCAL_RANK`` on GPUs, else the CPU).
        mesh: `DeviceMesh` of shape ``(replica, cfg, ulysses)`` (dims named so).
        shard_mesh: 1-D `DeviceMesh` over all ranks (FSDP).
        stats: all-to-all bytes and seconds, accumulated over every forward.
    """

    layout: ParallelLayout
    rank: int
    world_size: int
    device: torch.device
    mesh: Any
    shard_mesh: Any
    stats: CommStats = field(default_factory=CommStats)

    @property
    def is_main(self) -> bool:
        """Whether this is global rank 0 (the one that decodes and writes)."""
        return self.rank == 0

    def close(self) -> None:
        """Destroy the process group (idempotent)."""
        if dist.is_initialized():
            dist.destroy_process_group()


def init_parallel(
    layout: ParallelLayout, device: torch.device | str = "cpu", timeout_s: float = 600.0
) -> ParallelRuntime:
    """Check ``layout`` against torchrun's world size, start the process group and build the meshes.

    Args:
        layout: the layout; its world size must equal ``WORLD_SIZE``.
        device: ``cpu`` (gloo) or ``cuda`` (NCCL, one GPU per local rank).
        timeout_s: collective timeout, so a rank that dies cannot hang the others forever.

    Returns:
        The `ParallelRuntime`.

    Raises:
        InputError: the layout does not multiply to the world size (raised before any collective).
    """
    from torch.distributed.device_mesh import init_device_mesh

    world_size = environment_world_size()
    layout.check_world(world_size)
    device = torch.device(device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=timedelta(seconds=timeout_s))
    mesh = init_device_mesh(device.type, (layout.replicas(world_size), layout.branches, layout.ulysses),
                            mesh_dim_names=("replica", "cfg", "ulysses"))
    shard_mesh = init_device_mesh(device.type, (world_size,))
    return ParallelRuntime(layout=layout, rank=dist.get_rank(), world_size=world_size, device=device,
                           mesh=mesh, shard_mesh=shard_mesh)


def _wan_dits(backbone: nn.Module) -> list[nn.Module]:
    from pusa_fw_wan.dit.model import WanDiT

    return [module for module in backbone.modules() if isinstance(module, WanDiT)]


def _is_sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def parallelize_backbone(backbone: Backbone, runtime: ParallelRuntime, *,
                         param_dtype: torch.dtype | None = None) -> Backbone:
    """Apply ``runtime.layout`` to a backbone (in place for its DiTs); return the backbone to sample with.

    Args:
        backbone: a `WanDiT` or a `WanExpertsBackbone` (every WanDiT inside is parallelised).
        runtime: from `init_parallel`.
        param_dtype: FSDP compute dtype of gathered weights (None: as stored).

    Returns:
        ``backbone``, or a `CfgParallelBackbone` around it with CFG parallel.
    """
    layout = runtime.layout
    for dit in _wan_dits(backbone):
        if layout.ulysses > 1:
            enable_sequence_parallel(dit, runtime.mesh.get_group("ulysses"), runtime.stats)
        if layout.fsdp and not _is_sharded(dit):  # a shard-only load (`load_sharded_dit`) is sharded already
            shard_dit(dit, runtime.shard_mesh, param_dtype=param_dtype)
    if layout.cfg_parallel:
        return CfgParallelBackbone(backbone, runtime.mesh.get_group("cfg"))
    return backbone


def parallelize_text_encoder(text_encoder: Any, runtime: ParallelRuntime) -> None:
    """Shard ``text_encoder.model`` (umT5) over all ranks when the layout asks for it (``fsdp_text``).

    The shards live on the mesh's device type (FSDP2 moves them there); nothing happens otherwise.
    """
    if runtime.layout.fsdp_text:
        shard_text_encoder(text_encoder.model.requires_grad_(False), runtime.shard_mesh)
