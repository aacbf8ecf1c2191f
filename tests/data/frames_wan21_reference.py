"""Frozen reference: the Wan-VAE frame map as `pusa_fw/frames.py` hard-coded it before `LatentGeometry`.

Tests compare `WAN21_GEOMETRY` against it (values and error messages); do not import it from library code.

Latent 0 is pixel frame 0; latent k >= 1 covers pixel frames 4k-3 .. 4k. A video of T pixel frames must
have T = 4n + 1 and has (T - 1) / 4 + 1 latent frames (81 -> 21).
"""

from __future__ import annotations

from pusa_fw.errors import FrameMapError

TEMPORAL_STRIDE = 4
SPATIAL_MULTIPLE = 16


def latent_frame_count(num_frames: int) -> int:
    """Number of latent frames for `num_frames` pixel frames (which must be 4n + 1)."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise FrameMapError(f"num_frames={num_frames!r} must be a positive integer of the form 4n+1 (e.g. 81)")
    if (num_frames - 1) % TEMPORAL_STRIDE:
        lower = num_frames - (num_frames - 1) % TEMPORAL_STRIDE
        raise FrameMapError(
            f"num_frames={num_frames} is not of the form 4n+1; use {lower} or {lower + TEMPORAL_STRIDE}"
        )
    return (num_frames - 1) // TEMPORAL_STRIDE + 1


def pixel_frame_count(num_latent_frames: int) -> int:
    """Number of pixel frames decoded from `num_latent_frames` latents (21 -> 81)."""
    if num_latent_frames < 1:
        raise FrameMapError(f"num_latent_frames={num_latent_frames} must be >= 1")
    return (num_latent_frames - 1) * TEMPORAL_STRIDE + 1


def latent_index(pixel_frame: int, num_frames: int | None = None) -> int:
    """Latent frame that holds pixel frame `pixel_frame` (0 -> 0, 1..4 -> 1, 5..8 -> 2, ...).

    Args:
        pixel_frame: a 0-based pixel-frame position.
        num_frames: the video length in pixel frames; when given the position must lie inside it.
    """
    if num_frames is not None:
        latent_frame_count(num_frames)
        if not 0 <= pixel_frame < num_frames:
            raise FrameMapError(
                f"pixel frame {pixel_frame} is outside a {num_frames}-frame video; use 0..{num_frames - 1}"
            )
    elif pixel_frame < 0:
        raise FrameMapError(f"pixel frame {pixel_frame} is negative; positions start at 0")
    return 0 if pixel_frame == 0 else (pixel_frame + TEMPORAL_STRIDE - 1) // TEMPORAL_STRIDE


def pixel_span(latent: int) -> range:
    """Pixel frames covered by latent frame `latent` (0 -> [0], k -> 4k-3 .. 4k)."""
    if latent < 0:
        raise FrameMapError(f"latent frame {latent} is negative")
    if latent == 0:
        return range(0, 1)
    return range(TEMPORAL_STRIDE * latent - 3, TEMPORAL_STRIDE * latent + 1)


def check_spatial_size(height: int, width: int) -> None:
    """Raise unless height and width are positive multiples of 16 (VAE /8 times patch 2)."""
    for name, value in (("height", height), ("width", width)):
        if value <= 0 or value % SPATIAL_MULTIPLE:
            near = max(SPATIAL_MULTIPLE, round(value / SPATIAL_MULTIPLE) * SPATIAL_MULTIPLE)
            raise FrameMapError(f"{name}={value} must be a positive multiple of 16; e.g. {near}")
