"""Videos longer than one forward pass: rolling generation and seamless loops."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from pusa_fw.errors import PlanError
from pusa_fw.frames import latent_frame_count, latent_index
from pusa_fw.plan import Plan
from pusa_fw.task import Hold
from pusa_fw.timeline import compose_timeline, rolling_layout

from .base import ScheduledTask, make_policy, spread_strengths


class Rolling(ScheduledTask):
    """Rolling long video: windows of `window` pixel frames keep `overlap` pixel frames of history.

    Held frames (an optional first image, keyframes at absolute pixel positions) are honoured whichever
    window they fall in. History is kept as latents between windows (no VAE round trip).
    """

    name = "rolling"
    summary = "long video by sliding windows with latent history (sync or pyramid per window)"
    ring: ClassVar[bool] = False

    window: int = Field(81, ge=5, description="pixel frames per window (4n+1)")
    overlap: int = Field(17, ge=1, description="pixel frames of history per window (4n+1)")
    image: bool = Field(False, description="hold an image as the first frame")
    image_strength: float = Field(0.8, ge=0, le=1, description="hold strength of the first image")
    keyframes: list[int] = Field(default_factory=list, description="pixel positions of keyframes on the timeline")
    keyframe_strengths: list[float] = Field(default_factory=lambda: [0.8], description="one per keyframe or one")
    history_noise: float = Field(0.0, ge=0, lt=1, description="sigma at which history is shown (SkyReels 0.02)")

    @model_validator(mode="after")
    def _check_sizes(self) -> Rolling:
        for field in ("window", "overlap"):
            value = getattr(self, field)
            if (value - 1) % 4:
                raise ValueError(f"{field}={value} must be 4n+1 pixel frames")
        if self.overlap >= self.window:
            raise ValueError(f"overlap={self.overlap} must be smaller than window={self.window}")
        return self

    def holds(self, num_frames: int, steps: int = 10) -> list[Hold]:
        latent_frame_count(num_frames)
        holds: list[Hold] = []
        taken: dict[int, str] = {}
        if self.image:
            holds.append(Hold(0, make_policy(self.policy, self.image_strength), source="image"))
            taken[0] = "the first image"
        strengths = spread_strengths(self.keyframe_strengths, len(self.keyframes), "keyframe_strengths")
        for k, (position, strength) in enumerate(zip(self.keyframes, strengths)):
            latent = latent_index(position, num_frames)
            if latent in taken:
                raise PlanError(
                    f"keyframe at pixel frame {position} falls into latent frame {latent}, already held by "
                    f"{taken[latent]}; move it to another 4-frame group"
                )
            taken[latent] = f"the keyframe at pixel frame {position}"
            holds.append(Hold(latent, make_policy(self.policy, strength), source=f"keyframe:{k}"))
        return holds

    def plan(self, num_frames: int = 241, steps: int = 10, shift: float = 5.0) -> Plan:
        total = latent_frame_count(num_frames)
        window = latent_frame_count(self.window)
        overlap = latent_frame_count(self.overlap)
        layouts = rolling_layout(total, window, overlap, ring=self.ring)
        return compose_timeline(
            self.base_schedule(shift),
            total,
            steps,
            layouts,
            self.holds(num_frames, steps),
            ring=self.ring,
            history_noise=self.history_noise,
            meta=self.describe(),
        )


class Loop(Rolling):
    """A seamless loop: a ring timeline whose last window sees the first frames as its future."""

    name = "loop"
    summary = "looping video: a ring timeline, the end flows into the start"
    ring: ClassVar[bool] = True

    window: int = Field(33, ge=5, description="pixel frames per window (4n+1)")
    overlap: int = Field(5, ge=1, description="pixel frames of history on each side of the seam (4n+1)")

    def plan(self, num_frames: int = 81, steps: int = 10, shift: float = 5.0) -> Plan:
        if num_frames <= 1:
            raise PlanError("a loop needs more than one frame")
        return super().plan(num_frames, steps, shift)
