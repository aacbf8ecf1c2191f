"""`ParallelLayout`: how the ranks of a torchrun job split one generation, and its checks.

``world_size = ulysses * (2 if cfg_parallel else 1)``. The ranks form a `DeviceMesh` of shape
``(replica, cfg, ulysses)``: each ``ulysses`` row is a sequence-parallel group that splits the latent
frames; the two ``cfg`` rows of a CFG-parallel layout run the prompt and the negative prompt. With
``fsdp`` the DiT weights are sharded per block over all ranks (the official ``--dit_fsdp``), which
combines with either; only then may the job have a multiple of ``world_size`` ranks (replicas that
compute the same thing and share the weights, e.g. ``--fsdp`` alone on 8 GPUs).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pusa_fw.errors import InputError

from pusa_fw_wan.parallel.sequence import check_frames
from pusa_fw_wan.parallel.ulysses import check_heads

__all__ = ["ParallelLayout"]


class ParallelLayout(BaseModel):
    """Multi-process layout of one generation.

    Attributes:
        ulysses: ranks that split the latent frames of every window (Ulysses sequence parallelism);
            must divide the DiT's attention heads (14B: 40, 1.3B: 12) and be <= the window's frames.
        fsdp: shard the DiT weights per block over all ranks (FSDP2).
        cfg_parallel: run the prompt and negative-prompt branches on two rank groups.
        fsdp_text: shard the text encoder per block over all ranks too (the official ``--t5_fsdp``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ulysses: int = Field(1, ge=1, description="sequence-parallel ranks per branch")
    fsdp: bool = Field(False, description="shard the DiT weights per block over all ranks")
    cfg_parallel: bool = Field(False, description="prompt and negative prompt on two rank groups")
    fsdp_text: bool = Field(False, description="shard the umT5 text encoder per block over all ranks")

    @property
    def branches(self) -> int:
        """Rank groups running different guidance branches (2 with CFG parallel, else 1)."""
        return 2 if self.cfg_parallel else 1

    @property
    def world_size(self) -> int:
        """Processes the layout needs: ``ulysses * branches``."""
        return self.ulysses * self.branches

    @property
    def is_parallel(self) -> bool:
        """Whether the layout needs more than one process or shards anything."""
        return self.world_size > 1 or self.fsdp or self.fsdp_text

    def replicas(self, world_size: int) -> int:
        """Rank groups that compute the same thing: ``world_size / (ulysses * branches)``.

        More than one only with ``fsdp`` (the copies then share the sharded weights).

        Raises:
            InputError: the layout does not fit ``world_size``.
        """
        self.check_world(world_size)
        return world_size // self.world_size

    def check_world(self, world_size: int) -> None:
        """Raise `InputError` unless the layout multiplies to ``world_size`` (a multiple with fsdp)."""
        sharded = self.fsdp or self.fsdp_text
        fits = world_size == self.world_size or (sharded and world_size % self.world_size == 0)
        if not fits:
            branches = " x 2 (--cfg-parallel)" if self.cfg_parallel else ""
            multiple = " or a multiple of it (with --fsdp)" if sharded else ""
            raise InputError(
                f"layout --ulysses {self.ulysses}{branches} needs {self.world_size} processes{multiple} but "
                f"the job has {world_size}; use torchrun --nproc_per_node {self.world_size} or change "
                "--ulysses"
            )

    def check_model(self, num_heads: int, window_frames: int, cfg: float | None = None) -> None:
        """Raise `InputError` for heads not divisible by ``ulysses`` or more ranks than frames.

        Args:
            num_heads: the DiT's attention heads.
            window_frames: the fewest latent frames any forward pass of the plan sees.
            cfg: the guidance scale; CFG parallel needs a second branch (cfg != 1).
        """
        check_heads(num_heads, self.ulysses)
        check_frames(window_frames, self.ulysses)
        if self.cfg_parallel and cfg is not None and cfg == 1.0:
            raise InputError("--cfg-parallel needs guidance (--cfg other than 1); drop --cfg-parallel")

    def describe(self, world_size: int) -> dict[str, Any]:
        """JSON-able record for the sidecar."""
        return {"world_size": world_size, "ulysses": self.ulysses, "fsdp": self.fsdp,
                "cfg_parallel": self.cfg_parallel, "fsdp_text": self.fsdp_text}
