"""`LatentGeometry`: how a codec (VAE) maps pixel frames and pixels onto latent frames and cells.

The geometry belongs to the codec a backbone is paired with. With ``first_frame_alone=True`` and temporal
stride s (Wan2.1: s = 4), latent 0 is pixel frame 0 and latent k >= 1 covers pixel frames s*k-s+1 .. s*k, so
a video of T pixel frames needs T = s*n + 1 and has n + 1 latent frames (81 -> 21). With
``first_frame_alone=False``, T must be a multiple of s and latent k covers s*k .. s*k+s-1. Heights and widths
must be multiples of ``spatial_factor * patch_size`` (pixels per latent cell times cells per token side).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .errors import FrameMapError


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class LatentGeometry(BaseModel):
    """The frame map and spatial grid of a codec. Immutable; Wan2.1's is `WAN21_GEOMETRY`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temporal_stride: int = Field(4, ge=1, description="pixel frames per latent frame (after frame 0 if alone)")
    first_frame_alone: bool = Field(True, description="pixel frame 0 has a latent frame of its own")
    spatial_factor: int = Field(8, ge=1, description="pixels per latent cell along height and width")
    patch_size: int = Field(2, ge=1, description="latent cells per token side")
    channels: int = Field(16, ge=1, description="latent channels")

    @property
    def spatial_multiple(self) -> int:
        """Pixels per token side: heights and widths must be multiples of it."""
        return self.spatial_factor * self.patch_size

    def _frames_form(self) -> str:
        s = self.temporal_stride
        return f"{s}n+1" if self.first_frame_alone else f"a multiple of {s}"

    def num_latent_frames(self, num_frames: int) -> int:
        """Number of latent frames for `num_frames` pixel frames (Wan2.1: 81 -> 21).

        Raises:
            FrameMapError: `num_frames` is not a positive count of the codec's form (s*n + 1, or s*n).
        """
        s = self.temporal_stride
        example = self.num_frames(21)
        if not _is_int(num_frames) or num_frames < 1:
            raise FrameMapError(
                f"num_frames={num_frames!r} must be a positive integer of the form {self._frames_form()} "
                f"(e.g. {example})"
            )
        offset = 1 if self.first_frame_alone else 0
        remainder = (num_frames - offset) % s
        if remainder or num_frames < max(1, offset or s):
            lower = num_frames - remainder
            options = f"{lower} or {lower + s}" if lower >= max(1, offset or s) else f"{lower + s}"
            raise FrameMapError(f"num_frames={num_frames} is not of the form {self._frames_form()}; use {options}")
        return (num_frames - offset) // s + offset

    def num_frames(self, num_latent_frames: int) -> int:
        """Number of pixel frames decoded from `num_latent_frames` latents (Wan2.1: 21 -> 81)."""
        if not _is_int(num_latent_frames) or num_latent_frames < 1:
            raise FrameMapError(f"num_latent_frames={num_latent_frames!r} must be an integer >= 1")
        if self.first_frame_alone:
            return (num_latent_frames - 1) * self.temporal_stride + 1
        return num_latent_frames * self.temporal_stride

    def latent_index(self, pixel_frame: int, num_frames: int | None = None) -> int:
        """Latent frame that holds pixel frame `pixel_frame` (Wan2.1: 0 -> 0, 1..4 -> 1, 5..8 -> 2, ...).

        Args:
            pixel_frame: a 0-based pixel-frame position.
            num_frames: the video length in pixel frames; when given the position must lie inside it.
        """
        if not _is_int(pixel_frame):
            raise FrameMapError(f"pixel frame {pixel_frame!r} must be an integer position")
        if num_frames is not None:
            self.num_latent_frames(num_frames)
            if not 0 <= pixel_frame < num_frames:
                raise FrameMapError(
                    f"pixel frame {pixel_frame} is outside a {num_frames}-frame video; use 0..{num_frames - 1}"
                )
        elif pixel_frame < 0:
            raise FrameMapError(f"pixel frame {pixel_frame} is negative; positions start at 0")
        s = self.temporal_stride
        if self.first_frame_alone:
            return 0 if pixel_frame == 0 else (pixel_frame + s - 1) // s
        return pixel_frame // s

    def pixel_span(self, latent: int) -> range:
        """Pixel frames covered by latent frame `latent` (Wan2.1: 0 -> [0], k -> 4k-3 .. 4k)."""
        if not _is_int(latent) or latent < 0:
            raise FrameMapError(f"latent frame {latent!r} must be an integer >= 0")
        s = self.temporal_stride
        if not self.first_frame_alone:
            return range(s * latent, s * latent + s)
        if latent == 0:
            return range(0, 1)
        return range(s * latent - s + 1, s * latent + 1)

    def check_spatial_size(self, height: int, width: int) -> None:
        """Raise `FrameMapError` unless height and width are positive multiples of `spatial_multiple`."""
        multiple = self.spatial_multiple
        for name, value in (("height", height), ("width", width)):
            if not _is_int(value) or value <= 0 or value % multiple:
                near = max(multiple, round(value / multiple) * multiple) if _is_int(value) else multiple
                raise FrameMapError(f"{name}={value!r} must be a positive multiple of {multiple}; e.g. {near}")

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """Latent shape `(C, F, h, w)` of a `num_frames` x `height` x `width` video (checks all three)."""
        self.check_spatial_size(height, width)
        return (
            self.channels,
            self.num_latent_frames(num_frames),
            height // self.spatial_factor,
            width // self.spatial_factor,
        )


WAN21_GEOMETRY = LatentGeometry()
"""Wan2.1's VAE: stride 4 with frame 0 alone, /8 spatial, patch 2, 16 channels."""
