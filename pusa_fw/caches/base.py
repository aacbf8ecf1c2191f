"""`StepCache`: decides, per step and per guidance branch, which frames the backbone must compute.

The sampling loop stays a loop over the plan. For every guidance branch of every step it hands the cache a
`BranchCall` (the window's model input, its levels, which frames move in this step and how many updates
each has left) and asks it for a ``compute`` mask `[W]`:

- all True: a full call (or, for a cache that needs a partial backbone, a full refresh of its memory);
- some True: a partial call (`pusa_fw.backbone.PartialBackbone`) for those frames only;
- none True: the whole step reuses what the cache holds (no backbone call).

The cache then supplies the velocity of the whole window from what was computed and what it holds
(`supply`). Frames that do not move in a step never need their output: a cache may leave them out of
``compute`` (their velocity is never read by the sampler rule; held frames stay bit-exact whatever is
supplied for them, because the loop updates only frames whose level drops).

Like sampler state, a cache's state is an explicit value: `start` makes it, `decide` and `supply` take it
and return the new one, so one cache object can serve many samples. Caches are pydantic models (their
parameters), registered through ``register_caches`` and built with `pusa_fw.get_cache`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from ..backbone import supports_partial
from ..errors import InputError

__all__ = ["BranchCall", "StepCache", "relative_change"]


@dataclass(frozen=True)
class BranchCall:
    """One guidance branch's model call in one step, as the cache sees it.

    Attributes:
        step: plan step index.
        branch: guidance branch in call order (0: prompt, 1: negative prompt when CFG is on, then the
            history branch); each branch keeps its own cache state.
        frames: `[W]` int64 (CPU) timeline indices of the window's frames.
        latents: `[B, C, W, H, W']` the model input (do not keep a reference: it may change in place).
        sigmas: `[B, W]` float64 input levels.
        moving: `[W]` bool (CPU): frames whose level drops in this step (the only velocities used).
        remaining: `[W]` int64 (CPU): updates each frame has left in its run, this one included.
    """

    step: int
    branch: int
    frames: torch.Tensor
    latents: torch.Tensor
    sigmas: torch.Tensor
    moving: torch.Tensor
    remaining: torch.Tensor

    @property
    def window_key(self) -> tuple[int, ...]:
        """The window's frames as a hashable key (a cache refreshes everything when it changes)."""
        return tuple(int(frame) for frame in self.frames)


def relative_change(previous: torch.Tensor, current: torch.Tensor, previous_sigmas: torch.Tensor,
                    current_sigmas: torch.Tensor, sigma_floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame change of the model input since the previous call: the sums behind a relative L1.

    The indicator is a proxy, computed without the backbone's help, for TeaCache's relative L1 change of
    the timestep-modulated input: the relative L1 change of the latents plus the relative change of the
    level (the timestep embedding moves with it; near-clean frames move the most relative to their level).

    Args:
        previous: `[B, C, W, H, W']` input of the previous call.
        current: `[B, C, W, H, W']` input now.
        previous_sigmas: `[B, W]` levels of the previous call.
        current_sigmas: `[B, W]` levels now.
        sigma_floor: added to the previous level in the level term (a frame at sigma 0 does not divide by 0).

    Returns:
        `[W]` float64 change per frame (``|dx|_1 / |x|_1 + |d sigma| / (sigma + floor)``, batch averaged), and
        `[W]` float64 weights (``|x|_1`` per frame) to pool frames into one global value.
    """
    diff = (current.double() - previous.double()).abs().sum(dim=(1, 3, 4))
    base = previous.double().abs().sum(dim=(1, 3, 4)).clamp_min(1e-12)
    latent_term = (diff / base).mean(dim=0)
    sigma_term = ((current_sigmas - previous_sigmas).abs() / (previous_sigmas + sigma_floor)).mean(dim=0)
    return (latent_term + sigma_term.to(latent_term.device)).cpu(), base.mean(dim=0).cpu()


class StepCache(BaseModel, ABC):
    """A step cache: its parameters are the model's fields; its state is an explicit value.

    Subclasses set ``name``, ``summary``, ``needs_partial`` and implement `decide` and `supply`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    needs_partial: ClassVar[bool] = False
    """Whether the cache computes some frames only (needs `pusa_fw.backbone.PartialBackbone`)."""

    def check_backbone(self, backbone: Any) -> None:
        """Raise `InputError` (one line) when the cache needs a partial backbone and `backbone` is not one."""
        if self.needs_partial and not supports_partial(backbone):
            raise InputError(
                f"cache {self.name!r} needs a backbone with velocity_partial (partial computation); "
                f"{type(backbone).__name__} has none: use --cache teacache or --cache none"
            )

    def start(self) -> Any:
        """The initial state of one sample (all branches): nothing cached yet."""
        return {}

    @abstractmethod
    def decide(self, state: Any, call: BranchCall) -> tuple[torch.Tensor, Any]:
        """Which frames to compute now.

        Returns:
            `[W]` bool (CPU) ``compute`` mask and the new state. A cache without ``needs_partial`` must
            return all True or all False.
        """

    @abstractmethod
    def supply(self, state: Any, call: BranchCall, compute: torch.Tensor,
               computed: torch.Tensor | None) -> tuple[torch.Tensor, Any]:
        """The velocity of the whole window.

        Args:
            state: the state `decide` returned.
            call: the same call.
            compute: the mask `decide` returned.
            computed: `[B, C, Fc, H, W']` velocity of the computed frames in window order (None if none).

        Returns:
            `[B, C, W, H, W']` velocity (frames that do not move may hold anything finite) and the new state.
        """
