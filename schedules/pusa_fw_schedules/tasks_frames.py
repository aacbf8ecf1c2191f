"""One-window tasks on a single clip: t2v, i2v, start-end, keyframes at any pixel-frame positions."""

from __future__ import annotations

from pydantic import Field, field_validator

from pusa_fw.errors import PlanError
from pusa_fw.geometry import WAN21_GEOMETRY, LatentGeometry
from pusa_fw.task import Hold

from .base import ScheduledTask, spread_strengths


class TextToVideo(ScheduledTask):
    """Text-to-video: every frame generated; all frames equal reduces to the base Wan model."""

    name = "t2v"
    summary = "text to video; no held frames"


class ImageToVideo(ScheduledTask):
    """Image-to-video: the image is latent frame 0."""

    name = "i2v"
    summary = "image to video; the image held as latent frame 0"

    strength: float = Field(0.8, ge=0, le=1, description="hold strength of the image (Pusa noise 0.2 = 0.8)")

    def holds(self, num_frames: int, num_steps: int = 10, geometry: LatentGeometry = WAN21_GEOMETRY) -> list[Hold]:
        geometry.num_latent_frames(num_frames)
        return [Hold(0, self.held_policy(self.strength), source="image")]


class StartEnd(ScheduledTask):
    """Start and end frames: the first image at latent 0, the last at the final latent."""

    name = "start-end"
    summary = "first and last frame given"

    strengths: list[float] = Field(
        default_factory=lambda: [0.8, 0.5], description="hold strengths of start and end (Pusa noise 0.2,0.5)"
    )

    @field_validator("strengths")
    @classmethod
    def _two_in_range(cls, values: list[float]) -> list[float]:
        if len(values) not in (1, 2) or any(not 0 <= v <= 1 for v in values):
            raise ValueError("strengths needs one or two values in [0, 1] (start, end)")
        return values

    def holds(self, num_frames: int, num_steps: int = 10, geometry: LatentGeometry = WAN21_GEOMETRY) -> list[Hold]:
        last = geometry.num_latent_frames(num_frames) - 1
        if last == 0:
            raise PlanError("start-end needs num_frames >= 5 so that start and end are different latents")
        start, end = spread_strengths(self.strengths, 2, "strengths")
        return [
            Hold(0, self.held_policy(start), source="keyframe:0"),
            Hold(last, self.held_policy(end), source="keyframe:1"),
        ]


class Keyframes(ScheduledTask):
    """Keyframes at any pixel-frame positions, mapped to latent frames by the Wan frame map."""

    name = "keyframes"
    summary = "images at arbitrary pixel-frame positions"

    positions: list[int] = Field(
        default_factory=lambda: [0, 40, 80], min_length=1, description="pixel-frame positions of the images"
    )
    strengths: list[float] = Field(default_factory=lambda: [0.8], description="one per keyframe, or one for all")

    @field_validator("strengths")
    @classmethod
    def _in_range(cls, values: list[float]) -> list[float]:
        if not values or any(not 0 <= v <= 1 for v in values):
            raise ValueError("strengths must be non-empty values in [0, 1]")
        return values

    def holds(self, num_frames: int, num_steps: int = 10, geometry: LatentGeometry = WAN21_GEOMETRY) -> list[Hold]:
        strengths = spread_strengths(self.strengths, len(self.positions), "strengths")
        seen: dict[int, int] = {}
        holds = []
        for k, (position, strength) in enumerate(zip(self.positions, strengths)):
            latent = geometry.latent_index(position, num_frames)
            if latent in seen:
                span = geometry.pixel_span(latent)
                raise PlanError(
                    f"keyframes at pixel frames {seen[latent]} and {position} fall into the same latent frame "
                    f"{latent} (pixel frames {span.start}..{span[-1]} share it); move one of them"
                )
            seen[latent] = position
            holds.append(Hold(latent, self.held_policy(strength), source=f"keyframe:{k}"))
        return holds
