"""Tasks that start from given video: extension, transition between two clips, v2v."""

from __future__ import annotations

from pydantic import Field

from pusa_fw.errors import PlanError
from pusa_fw.geometry import WAN21_GEOMETRY, LatentGeometry
from pusa_fw.plan import Plan
from pusa_fw.task import Hold

from .base import ScheduledTask, spread_strengths


class Extension(ScheduledTask):
    """Extend a given clip: its latents are the held prefix, the rest is generated."""

    name = "extension"
    summary = "continue a given clip (its latent prefix held)"

    given_frames: int = Field(13, ge=1, description="pixel frames of the given clip (4n+1; 13 = 4 latents)")
    strengths: list[float] = Field(default_factory=lambda: [1.0, 0.7, 0.6, 0.5], description="per held latent")

    def holds(self, num_frames: int, num_steps: int = 10, geometry: LatentGeometry = WAN21_GEOMETRY) -> list[Hold]:
        total = geometry.num_latent_frames(num_frames)
        given = geometry.num_latent_frames(self.given_frames)
        if given >= total:
            raise PlanError(
                f"given_frames={self.given_frames} ({given} latents) leaves nothing to generate in "
                f"num_frames={num_frames} ({total} latents); ask for a longer video"
            )
        strengths = spread_strengths(self.strengths, given, "strengths")
        policies = [self.held_policy(s) for s in strengths]
        return [Hold(f, p, source="video", source_frame=f, clip_end="tail") for f, p in enumerate(policies)]


class Transition(ScheduledTask):
    """Bridge two clips: the tail of clip A at the start and the head of clip B at the end are held.

    The two clips are encoded separately (B's latents are not computed in A's temporal context).
    """

    name = "transition"
    summary = "generate the bridge between the tail of one clip and the head of another"

    tail_frames: int = Field(5, ge=1, description="pixel frames of clip A's tail held at the start (4n+1)")
    head_frames: int = Field(5, ge=1, description="pixel frames of clip B's head held at the end (4n+1)")
    strength: float = Field(0.8, ge=0, le=1, description="hold strength of every held frame")

    def holds(self, num_frames: int, num_steps: int = 10, geometry: LatentGeometry = WAN21_GEOMETRY) -> list[Hold]:
        total = geometry.num_latent_frames(num_frames)
        tail = geometry.num_latent_frames(self.tail_frames)
        head = geometry.num_latent_frames(self.head_frames)
        if tail + head >= total:
            raise PlanError(
                f"tail ({tail} latents) and head ({head} latents) fill all {total} latents of num_frames="
                f"{num_frames}; make the video longer or hold fewer frames"
            )
        policy = self.held_policy(self.strength)
        holds = [Hold(f, policy, source="video", source_frame=f, clip_end="tail") for f in range(tail)]
        holds += [Hold(total - head + j, policy, source="video_b", source_frame=j) for j in range(head)]
        return holds


class VideoToVideo(ScheduledTask):
    """SDEdit-style v2v: every frame starts at sigma = `strength` from the given video."""

    name = "v2v"
    summary = "partial re-noise of a whole video (every frame starts at sigma = strength)"

    strength: float = Field(0.7, gt=0, le=1, description="starting sigma of every frame (1 = regenerate)")
    policy: str = Field("late_release", description="conditioning policy of the given frames")

    def holds(self, num_frames: int, num_steps: int = 10, geometry: LatentGeometry = WAN21_GEOMETRY) -> list[Hold]:
        total = geometry.num_latent_frames(num_frames)
        policy = self.held_policy(1.0 - self.strength)
        return [Hold(f, policy, source="video", source_frame=f) for f in range(total)]

    def plan(
        self, num_frames: int = 81, num_steps: int = 10, shift: float = 5.0, geometry: LatentGeometry = WAN21_GEOMETRY
    ) -> Plan:
        try:
            return super().plan(num_frames, num_steps, shift, geometry)
        except PlanError as error:
            if "idle" not in str(error):
                raise
            name = self.policy if isinstance(self.policy, str) else self.policy.name
            raise PlanError(
                f"v2v with policy {name!r} keeps every frame at its source, so nothing is re-generated; use a "
                "policy that releases frames (late_release, multiplier, ramp)"
            ) from None
