"""Videos longer than one forward pass: rolling generation and seamless loops."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from pusa_fw.errors import FrameMapError, PlanError
from pusa_fw.geometry import WAN21_GEOMETRY, LatentGeometry
from pusa_fw.plan import Plan
from pusa_fw.task import Hold
from pusa_fw.timeline import compose_timeline, rolling_layout

from .base import ScheduledTask, spread_strengths


class Rolling(ScheduledTask):
    """Rolling long video: windows of `window` pixel frames keep `overlap` pixel frames of history.

    Held frames (an optional first image, keyframes at absolute pixel positions) are honoured whichever
    window they fall in. History is kept as latents between windows (no VAE round trip).
    """

    name = "rolling"
    summary = "long video by sliding windows with latent history (sync or pyramid per window)"
    ring: ClassVar[bool] = False

    window: int = Field(81, ge=1, description="pixel frames per window (4n+1 for Wan2.1)")
    overlap: int = Field(17, ge=1, description="pixel frames of history per window (4n+1 for Wan2.1)")
    image: bool = Field(False, description="hold an image as the first frame")
    image_strength: float = Field(0.8, ge=0, le=1, description="hold strength of the first image")
    keyframes: list[int] = Field(default_factory=list, description="pixel positions of keyframes on the timeline")
    keyframe_strengths: list[float] = Field(default_factory=lambda: [0.8], description="one per keyframe or one")
    history_noise: float = Field(0.0, ge=0, lt=1, description="sigma at which history is shown (SkyReels 0.02)")
    history_multiplier: float = Field(
        0.0, ge=0, le=1, description="history shown at m x the window's current level (Pusa's multiplier); 0 = off"
    )

    @model_validator(mode="after")
    def _check_sizes(self) -> Rolling:
        if self.overlap >= self.window:
            raise ValueError(f"overlap={self.overlap} must be smaller than window={self.window}")
        if self.history_noise > 0 and self.history_multiplier > 0:
            raise ValueError(
                f"history_noise={self.history_noise} and history_multiplier={self.history_multiplier} both set how "
                "history is shown; set one of them to 0"
            )
        return self

    def holds(self, num_frames: int, num_steps: int = 10, geometry: LatentGeometry = WAN21_GEOMETRY) -> list[Hold]:
        geometry.num_latent_frames(num_frames)
        holds: list[Hold] = []
        taken: dict[int, str] = {}
        if self.image:
            holds.append(Hold(0, self.held_policy(self.image_strength), source="image"))
            taken[0] = "the first image"
        strengths = spread_strengths(self.keyframe_strengths, len(self.keyframes), "keyframe_strengths")
        for k, (position, strength) in enumerate(zip(self.keyframes, strengths)):
            latent = geometry.latent_index(position, num_frames)
            if latent in taken:
                raise PlanError(
                    f"keyframe at pixel frame {position} falls into latent frame {latent}, already held by "
                    f"{taken[latent]}; move it to another latent frame"
                )
            taken[latent] = f"the keyframe at pixel frame {position}"
            holds.append(Hold(latent, self.held_policy(strength), source=f"keyframe:{k}"))
        return holds

    def _latent_count(self, field: str, geometry: LatentGeometry) -> int:
        value = getattr(self, field)
        try:
            return geometry.num_latent_frames(value)
        except FrameMapError as error:
            raise PlanError(f"{field}={value} is not a pixel-frame count of this codec: {error}") from None

    def plan(
        self, num_frames: int = 241, num_steps: int = 10, shift: float = 5.0, geometry: LatentGeometry = WAN21_GEOMETRY
    ) -> Plan:
        total = geometry.num_latent_frames(num_frames)
        window = self._latent_count("window", geometry)
        overlap = self._latent_count("overlap", geometry)
        layouts = rolling_layout(total, window, overlap, ring=self.ring)
        return compose_timeline(
            self.base_schedule(shift),
            total,
            num_steps,
            layouts,
            self.holds(num_frames, num_steps, geometry),
            ring=self.ring,
            history_noise=self.history_noise,
            history_multiplier=self.history_multiplier,
            meta=self.describe(),
        )


class Loop(Rolling):
    """A seamless loop: a ring timeline whose last window sees the first frames as its future."""

    name = "loop"
    summary = "looping video: a ring timeline, the end flows into the start"
    ring: ClassVar[bool] = True

    window: int = Field(33, ge=1, description="pixel frames per window (4n+1 for Wan2.1)")
    overlap: int = Field(5, ge=1, description="pixel frames of history on each side of the seam (4n+1 for Wan2.1)")

    def plan(
        self, num_frames: int = 81, num_steps: int = 10, shift: float = 5.0, geometry: LatentGeometry = WAN21_GEOMETRY
    ) -> Plan:
        if num_frames <= 1:
            raise PlanError("a loop needs more than one frame")
        return super().plan(num_frames, num_steps, shift, geometry)
