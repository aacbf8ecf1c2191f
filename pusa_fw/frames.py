"""Wan2.1 frame map as plain functions: a compatibility layer over `WAN21_GEOMETRY`.

New code should take a `LatentGeometry` (from the codec) and call its methods; these functions are the
Wan2.1 default (81 pixel frames -> 21 latents, sizes multiples of 16).
"""

from __future__ import annotations

from .geometry import WAN21_GEOMETRY

TEMPORAL_STRIDE = WAN21_GEOMETRY.temporal_stride
SPATIAL_MULTIPLE = WAN21_GEOMETRY.spatial_multiple

latent_frame_count = WAN21_GEOMETRY.num_latent_frames
pixel_frame_count = WAN21_GEOMETRY.num_frames
latent_index = WAN21_GEOMETRY.latent_index
pixel_span = WAN21_GEOMETRY.pixel_span
check_spatial_size = WAN21_GEOMETRY.check_spatial_size
