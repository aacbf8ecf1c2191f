"""Contexts that depend on the window: prompts keyed by frame range on a long timeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .errors import PusaError


def context_for(context: Any, frames: torch.Tensor) -> Any:
    """The context for a window of timeline `frames` (`[W]` int64): window-aware contexts pick, others pass."""
    pick = getattr(context, "for_frames", None)
    return pick(frames) if callable(pick) else context


@dataclass(frozen=True)
class PromptTimeline:
    """Per-range contexts on a timeline: entry k applies from latent frame `starts[k]` on.

    A window uses the entry that covers its middle frame (in window order, so wrapped ring windows work).

    Attributes:
        starts: first latent frame of each entry; must begin with 0 and increase.
        contexts: one context per entry (e.g. text embeddings `[B, L, D]`).
    """

    starts: Sequence[int]
    contexts: Sequence[Any]

    def __post_init__(self) -> None:
        if len(self.starts) != len(self.contexts) or not self.starts:
            raise PusaError("PromptTimeline needs one context per start frame, at least one")
        if self.starts[0] != 0 or any(b <= a for a, b in zip(self.starts, self.starts[1:])):
            raise PusaError(f"prompt start frames {list(self.starts)} must begin at 0 and increase")

    def for_frames(self, frames: torch.Tensor) -> Any:
        middle = int(frames[len(frames) // 2])
        index = max(k for k, start in enumerate(self.starts) if start <= middle)
        return self.contexts[index]
