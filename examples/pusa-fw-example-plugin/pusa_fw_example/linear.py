"""A linear sigma grid and a text-to-video task that uses it.

`LinearGrid` puts every frame on ``sigma = linspace(sigma_max, 0, S + 1)``: sigma falls by the same
amount every step, with no time shift. `LinearTextToVideo` compiles that grid into a one-window plan
with no held frames, the same way the built-in ``t2v`` does with the shifted grid.
"""

from __future__ import annotations

import torch
from einops import repeat
from pydantic import Field

from pusa_fw.geometry import WAN21_GEOMETRY, LatentGeometry
from pusa_fw.plan import Plan
from pusa_fw.schedule import TimestepSchedule
from pusa_fw.task import Hold, Task, compose_plan


class LinearGrid(TimestepSchedule):
    """Every frame on the same unshifted, linearly falling sigma sequence."""

    name = "linear"
    summary = "synchronous grid, sigma linear in the step (no shift)"

    sigma_max: float = Field(1.0, gt=0, le=1, description="sigma of the first row")

    def build(self, num_latent_frames: int, num_steps: int) -> torch.Tensor:
        """The grid `[num_steps + 1, num_latent_frames]`: row s is ``sigma_max * (1 - s / num_steps)``."""
        sequence = torch.linspace(self.sigma_max, 0.0, num_steps + 1, dtype=torch.float64).to(torch.float32)
        return repeat(sequence, "step -> step frame", frame=num_latent_frames)


class LinearTextToVideo(Task):
    """Text-to-video on `LinearGrid`: every latent frame generated, none held."""

    name = "linear-t2v"
    summary = "text to video on the linear grid (the grid has no shift, so `shift` is not used)"

    sigma_max: float = Field(1.0, gt=0, le=1, description="sigma every frame starts from")

    def holds(self, num_frames: int, num_steps: int = 10, geometry: LatentGeometry = WAN21_GEOMETRY) -> list[Hold]:
        """No held frames (checks that the codec accepts `num_frames`)."""
        geometry.num_latent_frames(num_frames)
        return []

    def plan(
        self, num_frames: int = 81, num_steps: int = 10, shift: float = 5.0, geometry: LatentGeometry = WAN21_GEOMETRY
    ) -> Plan:
        """The one-window plan over the codec's latent frames and `num_steps` steps.

        Args:
            num_frames: pixel frames (4n + 1 for Wan2.1).
            num_steps: denoising steps S.
            shift: not used (the linear grid is unshifted); accepted for the common task interface.
            geometry: the codec's frame map.

        Returns:
            A `Plan` whose ``sigmas`` are `[num_steps + 1, latent frames]`.
        """
        latents = geometry.num_latent_frames(num_frames)
        grid = LinearGrid(sigma_max=self.sigma_max).grid(latents, num_steps)
        meta = {**self.describe(), "schedule": "linear"}
        return compose_plan(grid, self.holds(num_frames, num_steps, geometry), meta=meta)
