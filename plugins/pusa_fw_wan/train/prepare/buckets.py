"""Resolution buckets: equal-area sizes on the codec's grid, and the one nearest an item's aspect ratio.

A bucket is ``(height, width)``, both multiples of the geometry's `spatial_multiple` (16 for Wan2.1, 32 for TI2V-5B), with
``height * width`` at most the base area and as close to it as the grid allows. Items are resized so the
bucket is covered, then center-cropped to it (`pusa_fw.io.image.resize_image`, ``"center-crop"``).
"""

from __future__ import annotations

import math

from pusa_fw.errors import InputError

__all__ = ["MAX_ASPECT", "aspect_buckets", "nearest_bucket"]

MAX_ASPECT = 4.0
"""Buckets span aspect ratios (width / height) from 1 / MAX_ASPECT to MAX_ASPECT."""


def aspect_buckets(height: int, width: int, multiple: int) -> list[tuple[int, int]]:
    """Equal-area buckets for a base size.

    Args:
        height: base height in pixels.
        width: base width in pixels; the area ``height * width`` is what every bucket approaches.
        multiple: grid step of heights and widths.

    Returns:
        ``(height, width)`` pairs sorted by aspect ratio, one per width on the grid.
    """
    if height % multiple or width % multiple:
        raise InputError(
            f"height={height}, width={width} must be multiples of {multiple} for this codec; "
            f"e.g. {max(multiple, height // multiple * multiple)}x"
            f"{max(multiple, width // multiple * multiple)}"
        )
    area = height * width
    buckets = set()
    for bucket_width in range(multiple, area // multiple + 1, multiple):
        bucket_height = area // bucket_width // multiple * multiple
        if bucket_height < multiple:
            break
        if 1 / MAX_ASPECT <= bucket_width / bucket_height <= MAX_ASPECT:
            buckets.add((bucket_height, bucket_width))
    buckets.add((height, width))
    best: dict[int, tuple[int, int]] = {}
    for bucket in buckets:  # per width, keep the bucket with the largest area
        if bucket[1] not in best or bucket[0] > best[bucket[1]][0]:
            best[bucket[1]] = bucket
    return sorted(best.values(), key=lambda bucket: bucket[1] / bucket[0])


def nearest_bucket(height: int, width: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket nearest in log aspect ratio to ``width / height``; ties go to the larger area."""
    if height <= 0 or width <= 0:
        raise InputError(f"an item of size {width}x{height} has no aspect ratio")
    ratio = math.log(width / height)
    return min(
        buckets, key=lambda bucket: (abs(math.log(bucket[1] / bucket[0]) - ratio), -bucket[0] * bucket[1])
    )
