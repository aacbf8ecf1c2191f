"""CFG parallel: the conditional and the unconditional branch of a guided step on two rank groups.

`CfgParallelBackbone` wraps a backbone (plain, FSDP-sharded or sequence-parallel). When the sampler asks
for both guidance branches at once (`Backbone.velocities`), the ranks of group 0 run the first context and
those of group 1 the second; the two results are exchanged with an all-gather over the pair of ranks
that sit at the same position in both groups, so every rank ends with both velocities. Any other call
(one context, or more than two) runs unchanged on every rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from pusa_fw.backbone import Backbone
from pusa_fw.errors import InputError

__all__ = ["CfgParallelBackbone"]


class CfgParallelBackbone(nn.Module, Backbone):
    """Evaluate the two guidance branches on two rank groups.

    Args:
        backbone: the velocity model every rank holds (registered as submodule ``backbone``).
        group: a process group of exactly 2 ranks, one from each branch group; its rank 0 computes
            the first context (the prompt), its rank 1 the second (the negative prompt).
    """

    def __init__(self, backbone: Backbone, group: dist.ProcessGroup) -> None:
        super().__init__()
        if not isinstance(backbone, Backbone):
            raise InputError(f"CfgParallelBackbone needs a Backbone, got {type(backbone).__name__}")
        size = dist.get_world_size(group)
        if size != 2:
            raise InputError(f"CFG parallel needs a group of 2 ranks (one per branch), got {size}")
        self.backbone = backbone
        self.group = group
        self.branch = dist.get_rank(group)

    def velocity(self, latents: torch.Tensor, sigmas: torch.Tensor, context: Any) -> torch.Tensor:
        """The wrapped backbone's velocity (the same call on every rank)."""
        return self.backbone.velocity(latents, sigmas, context)

    def forward(self, latents: torch.Tensor, sigmas: torch.Tensor, context: Any = None) -> torch.Tensor:
        """Same as `velocity`."""
        return self.velocity(latents, sigmas, context)

    def velocities(
        self, latents: torch.Tensor, sigmas: torch.Tensor, contexts: Sequence[Any]
    ) -> list[torch.Tensor]:
        """One velocity per context; two contexts are split between the branch groups.

        Args:
            latents: `[B, C, F, H, W]`, the same on every rank.
            sigmas: `[B, F]` or `[B]`.
            contexts: the contexts of the branches (prompt first).

        Returns:
            The velocities in the order of ``contexts``, on every rank.
        """
        if len(contexts) != 2:
            return [self.velocity(latents, sigmas, context) for context in contexts]
        mine = self.backbone.velocity(latents, sigmas, contexts[self.branch]).contiguous()
        both = [torch.empty_like(mine) for _ in range(2)]
        dist.all_gather(both, mine, group=self.group)
        return both
