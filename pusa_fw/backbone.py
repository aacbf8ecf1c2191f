"""The `Backbone` interface: a velocity predictor with one sigma per latent frame.

A backbone knows nothing about tasks, schedules or conditioning. It is handed the latents of the frames
in the current window, one sigma per frame, and an opaque context (text embeddings for Wan; whatever a
test backbone needs), and returns the flow-matching velocity `v = eps - x0`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch


class Backbone(ABC):
    """A per-frame-timestep velocity model.

    Implementations convert sigma to their own network timestep internally (Wan: `1000 * sigma`); no
    other code in pusa-fw does that conversion.
    """

    @abstractmethod
    def velocity(self, latents: torch.Tensor, sigmas: torch.Tensor, context: Any) -> torch.Tensor:
        """Predict the velocity.

        Args:
            latents: `[B, C, F, H, W]` noisy latents of the frames in the window.
            sigmas: `[B, F]` noise level of each frame, in [0, 1] (1 = pure noise); float64 from the
                sampling loop (plans keep their levels exact), so cast with care (`1000 * sigma` in float64).
            context: conditioning the model understands (e.g. text embeddings `[B, L, D]`), or None.

        Returns:
            `[B, C, F, H, W]` velocity `eps - x0`, same dtype and device as `latents`.
        """

    def velocities(
        self, latents: torch.Tensor, sigmas: torch.Tensor, contexts: Sequence[Any]
    ) -> list[torch.Tensor]:
        """The velocity under each of several contexts (the guidance branches), same latents and sigmas.

        The default calls `velocity` once per context, in order; a parallel backbone may evaluate the
        branches on different devices at once (CFG parallel).

        Returns:
            One `[B, C, F, H, W]` velocity per context, in the order of ``contexts``.
        """
        return [self.velocity(latents, sigmas, context) for context in contexts]

    def __call__(self, latents: torch.Tensor, sigmas: torch.Tensor, context: Any = None) -> torch.Tensor:
        return self.velocity(latents, sigmas, context)
