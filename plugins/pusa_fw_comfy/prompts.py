"""Prompts along a long timeline: the `PUSA_PROMPTS` socket of the Pusa Prompt Schedule node.

A rolling or loop plan slides windows over the timeline; each window is conditioned on the prompt whose
range covers its middle frame (`pusa_fw.context.PromptTimeline`). The positive `CONDITIONING` of the
sampler starts at pixel frame 0; each schedule entry adds a prompt from a later pixel frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pusa_fw.context import PromptTimeline
from pusa_fw.errors import InputError

from .plan_spec import PusaPlanSpec

__all__ = ["PromptEntry", "conditioning_tensor", "prompt_context"]


@dataclass(frozen=True)
class PromptEntry:
    """One later prompt: a ComfyUI `CONDITIONING` from pixel frame `frame` on."""

    frame: int
    conditioning: Any


def conditioning_tensor(conditioning: Any, name: str) -> torch.Tensor:
    """The text embedding `[1, L, D]` of a ComfyUI `CONDITIONING` (a list of ``[tensor, options]``).

    Raises:
        InputError: empty, combined (several entries) or not a CONDITIONING.
    """
    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise InputError(f"{name} is not a CONDITIONING; connect a text encoder's output")
    if len(conditioning) != 1:
        raise InputError(
            f"{name} combines {len(conditioning)} conditionings; the Pusa Sampler takes one prompt per input "
            "(use Pusa Prompt Schedule for prompts that change along a rolling video)"
        )
    entry = conditioning[0]
    tensor = entry[0] if isinstance(entry, (list, tuple)) and entry else None
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 3:
        raise InputError(f"{name} holds no text embedding [1, tokens, dim]; connect a text encoder's output")
    return tensor


def prompt_context(spec: PusaPlanSpec, positive: Any, schedule: list[PromptEntry] | None) -> Any:
    """The sampler's context: one embedding, or a `PromptTimeline` when prompts change along the video.

    Raises:
        InputError: a schedule on a one-window plan, two prompts starting in one latent frame, a frame
            outside the video.
    """
    first = conditioning_tensor(positive, "positive")
    if not schedule:
        return first
    windows = {tuple(window) for window in spec.plan.windows.tolist()}
    if len(windows) == 1:
        raise InputError(
            f"a prompt schedule needs a task with sliding windows (rolling, loop); task {spec.task.name!r} has "
            "one window, so only the positive prompt applies: disconnect prompt_schedule"
        )
    starts = {0: 0}
    contexts = [first]
    for entry in sorted(schedule, key=lambda item: item.frame):
        start = spec.geometry.latent_index(entry.frame, spec.num_frames)
        if start in starts:
            raise InputError(
                f"prompts from pixel frames {starts[start]} and {entry.frame} start in the same latent frame "
                f"{start}; move one (the positive prompt starts at frame 0)"
            )
        starts[start] = entry.frame
        contexts.append(conditioning_tensor(entry.conditioning, f"the prompt from frame {entry.frame}"))
    return PromptTimeline(starts=sorted(starts), contexts=contexts)
