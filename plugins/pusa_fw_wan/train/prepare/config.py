"""`PrepareConfig`: every setting of a dataset preparation run, validated in one place.

The settings that change what a clip's latents are (size, buckets, frame counts, extraction, fps) form the
`fingerprint`; a cached clip whose header carries another fingerprint is re-encoded on the next run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["EXTRACTION_MODES", "PrepareConfig"]

EXTRACTION_MODES: tuple[str, ...] = ("head", "uniform", "chunk")
_FINGERPRINT_FIELDS = (
    "height",
    "width",
    "aspect_buckets",
    "num_frames",
    "extraction",
    "clips_per_video",
    "fps",
)


class PrepareConfig(BaseModel):
    """What `prepare_dataset` reads, how it cuts clips, and where it writes the cache.

    Frame counts must fit the codec's `LatentGeometry` (4n + 1 for Wan); sizes must be multiples of its
    `spatial_multiple` (16 for Wan2.1, 32 for Wan2.2 TI2V-5B's /16 VAE). Both are checked against the codec
    when the run starts. The defaults are Wan2.1's; for TI2V-5B use its own (704x1280, 121 frames, 24 fps).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: Path = Field(
        description="folder with metadata.csv (file_name,text) or metadata.jsonl and the media"
    )
    out: Path = Field(description="cache folder (created); one .safetensors per clip plus index.json")
    height: int = Field(
        480, gt=0, description="base height; with aspect buckets only the area height*width counts"
    )
    width: int = Field(832, gt=0, description="base width")
    aspect_buckets: bool = Field(
        True, description="resize+center-crop each item to the equal-area bucket nearest its aspect ratio"
    )
    num_frames: tuple[int, ...] = Field(
        (81,), description="frame-count buckets; a video takes the longest one it can fill"
    )
    extraction: Literal["head", "uniform", "chunk"] = Field(
        "head", description="head: first clip; uniform: clips spread evenly; chunk: consecutive clips"
    )
    clips_per_video: int = Field(4, ge=1, description="clips per video for uniform; the most for chunk")
    fps: float | None = Field(
        16.0, gt=0, description="resample videos to this rate (Wan2.1: 16, TI2V-5B: 24); None keeps the file's"
    )
    rehash: bool = Field(
        False, description="hash every source again, even one whose size and mtime match its cached clips"
    )
    index_every: int = Field(
        25, ge=1, description="rewrite index.json after this many items (and at the end)"
    )

    @field_validator("num_frames", mode="before")
    @classmethod
    def _frames_tuple(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            return (value,)
        return value

    @field_validator("num_frames")
    @classmethod
    def _frames_positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(count < 1 for count in value):
            raise ValueError(
                f"num_frames={list(value)} must be a non-empty list of positive frame counts, e.g. [81]"
            )
        return tuple(sorted(set(value)))

    def fingerprint(self) -> str:
        """A short hash of the settings that change the encoded clips."""
        chosen = {name: getattr(self, name) for name in _FINGERPRINT_FIELDS}
        text = json.dumps(chosen, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
