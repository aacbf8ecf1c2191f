"""`ConditioningPolicy`: how a held frame's sigma path is shaped from the path it would otherwise follow.

A held frame has a given source latent. The policy turns the base path of its column in the grid
(`[S + 1]` sigmas, the path a generated frame would take) into

- its state levels `[S + 1]` (where a level goes *up*, the frame is re-drawn from its source with fresh
  noise; where it is 0 the frame is exactly its source), and
- the levels at which it is shown to the model `[S]` (noisier than the state only for a frame that is not
  updated in that step, e.g. re-noised history whose clean state is kept).

Policies are frozen pydantic models; ``strength`` conventions: 1 = held hard (clean), 0 = not held.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict


class FramePath(NamedTuple):
    """State levels `[S + 1, K]` and model-input levels `[S, K]` of K held frames."""

    sigmas: torch.Tensor
    input_sigmas: torch.Tensor


class ConditioningPolicy(BaseModel, ABC):
    """Shapes the sigma path of held frames. Subclasses set ``name`` and implement `path`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ClassVar[str]
    summary: ClassVar[str] = ""

    @abstractmethod
    def path(self, base: torch.Tensor) -> FramePath:
        """Shape held frames' paths.

        Args:
            base: `[S + 1, K]` float64 base sigmas of K held frames (non-increasing, last row 0).

        Returns:
            A `FramePath` with state levels `[S + 1, K]` (last row 0) and input levels `[S, K]`.
        """

    @classmethod
    def strength_fields(cls, strength: float) -> dict[str, object]:
        """The field values one per-frame strength in [0, 1] (1 = hard, 0 = free) stands for.

        Default: a policy with a ``strength`` field takes it; a policy without a notion of strength (e.g.
        ``clean``) returns ``{}`` and ignores it. Override where strength maps to other fields.
        """
        return {"strength": strength} if "strength" in cls.model_fields else {}

    @classmethod
    def from_strength(cls, strength: float, /, **params: object) -> ConditioningPolicy:
        """Build the policy a task asks for by name: `strength_fields(strength)`, overridden by `params`.

        Args:
            strength: the held frame's strength in [0, 1] (1 = hard).
            **params: explicit field values (a task's ``policy_params``); they win over the strength.
        """
        return cls(**{**cls.strength_fields(strength), **params})
