"""`LatentGeometry`: round trips of the frame map, the spatial checks, and the Wan2.1 default."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from pusa_fw.errors import FrameMapError
from pusa_fw.geometry import WAN21_GEOMETRY, LatentGeometry

geometries = st.builds(
    LatentGeometry,
    temporal_stride=st.integers(1, 8),
    first_frame_alone=st.booleans(),
    spatial_factor=st.integers(1, 16),
    patch_size=st.integers(1, 4),
    channels=st.integers(1, 64),
)


@given(geometries, st.integers(1, 64))
def test_latent_count_round_trips(geometry: LatentGeometry, num_latent_frames: int) -> None:
    num_frames = geometry.num_frames(num_latent_frames)
    assert geometry.num_latent_frames(num_frames) == num_latent_frames
    spans = [geometry.pixel_span(k) for k in range(num_latent_frames)]
    covered = [frame for span in spans for frame in span]
    assert covered == list(range(num_frames)), "latent spans tile the video in order, without gaps"
    for latent, span in enumerate(spans):
        for frame in span:
            assert geometry.latent_index(frame, num_frames) == latent


@given(geometries, st.integers(-3, 300))
def test_invalid_frame_counts_name_valid_neighbours(geometry: LatentGeometry, num_frames: int) -> None:
    valid = {geometry.num_frames(k) for k in range(1, 400)}
    if num_frames in valid:
        geometry.num_latent_frames(num_frames)
        return
    with pytest.raises(FrameMapError, match=f"num_frames={num_frames}") as info:
        geometry.num_latent_frames(num_frames)
    if num_frames >= 1:
        suggested = [int(word) for word in str(info.value).split("use ")[1].split(" or ")]
        assert all(value in valid for value in suggested)


@given(geometries, st.integers(-40, 400), st.integers(1, 400))
def test_spatial_check_and_latent_shape(geometry: LatentGeometry, height: int, width: int) -> None:
    multiple = geometry.spatial_factor * geometry.patch_size
    frames = geometry.num_frames(3)
    if height > 0 and height % multiple == 0 and width % multiple == 0:
        shape = geometry.latent_shape(frames, height, width)
        assert shape == (geometry.channels, 3, height // geometry.spatial_factor, width // geometry.spatial_factor)
    else:
        with pytest.raises(FrameMapError, match=f"multiple of {multiple}"):
            geometry.latent_shape(frames, height, width)


def _old_frames_module():
    """The frame map as the core hard-coded it before `LatentGeometry` (kept as a test reference)."""
    path = Path(__file__).parent / "data" / "frames_wan21_reference.py"
    spec = importlib.util.spec_from_file_location("frames_wan21_reference", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("frames_wan21_reference", module)
    spec.loader.exec_module(module)
    return module


@given(st.integers(-5, 400), st.integers(0, 120))
def test_wan21_default_equals_the_hard_coded_frame_map(num_frames: int, latent: int) -> None:
    old = _old_frames_module()
    geometry = WAN21_GEOMETRY
    assert geometry == LatentGeometry(temporal_stride=4, first_frame_alone=True, spatial_factor=8, patch_size=2,
                                      channels=16)
    try:
        expected = old.latent_frame_count(num_frames)
    except FrameMapError as error:
        with pytest.raises(FrameMapError) as info:
            geometry.num_latent_frames(num_frames)
        assert str(info.value) == str(error)
    else:
        assert geometry.num_latent_frames(num_frames) == expected
        for frame in range(0, num_frames, 3):
            assert geometry.latent_index(frame, num_frames) == old.latent_index(frame, num_frames)
    if latent >= 1:
        assert geometry.num_frames(latent) == old.pixel_frame_count(latent)
    assert geometry.pixel_span(latent) == old.pixel_span(latent)


def test_wan21_examples_and_spatial_messages() -> None:
    assert WAN21_GEOMETRY.num_latent_frames(81) == 21
    assert WAN21_GEOMETRY.latent_shape(81, 480, 832) == (16, 21, 60, 104)
    with pytest.raises(FrameMapError, match="height=100 must be a positive multiple of 16; e.g. 96"):
        WAN21_GEOMETRY.check_spatial_size(100, 64)
    with pytest.raises(FrameMapError, match="use 77 or 81"):
        WAN21_GEOMETRY.num_latent_frames(80)


def test_grouped_frames_without_a_lone_first_frame() -> None:
    geometry = LatentGeometry(temporal_stride=4, first_frame_alone=False)
    assert geometry.num_latent_frames(8) == 2
    assert geometry.pixel_span(1) == range(4, 8)
    assert geometry.latent_index(3) == 0 and geometry.latent_index(4) == 1
    with pytest.raises(FrameMapError, match="num_frames=3 is not of the form a multiple of 4; use 4"):
        geometry.num_latent_frames(3)


def test_geometry_is_frozen_and_validated() -> None:
    with pytest.raises(ValidationError):
        WAN21_GEOMETRY.temporal_stride = 2  # type: ignore[misc]
    with pytest.raises(ValidationError, match="temporal_stride"):
        LatentGeometry(temporal_stride=0)
    with pytest.raises(ValidationError, match="extra"):
        LatentGeometry(stride=4)  # type: ignore[call-arg]
