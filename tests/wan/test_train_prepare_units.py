"""Clip planning (frame-count buckets, extraction modes, fps resampling), resolution buckets and manifests."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pusa_fw.errors import InputError
from pusa_fw_wan.train.prepare.buckets import MAX_ASPECT, aspect_buckets, nearest_bucket
from pusa_fw_wan.train.prepare.clips import TooShortError, plan_clips, resampled_length
from pusa_fw_wan.train.prepare.manifest import read_manifest

RATES = [Fraction(16), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(60), Fraction(8)]


@given(
    num_source=st.integers(1, 400),
    source_fps=st.sampled_from(RATES),
    fps=st.sampled_from([None, Fraction(16)]),
    counts=st.sets(st.integers(0, 30).map(lambda n: 4 * n + 1), min_size=1, max_size=4),
    mode=st.sampled_from(["head", "uniform", "chunk"]),
    clips=st.integers(1, 6),
)
def test_clips_fit_the_video_and_take_the_longest_bucket(
    num_source, source_fps, fps, counts, mode, clips
) -> None:
    counts = tuple(sorted(counts))
    available = resampled_length(num_source, source_fps, fps or source_fps)
    if available < counts[0]:
        with pytest.raises(TooShortError, match="shortest clip needs"):
            plan_clips(num_source, source_fps, fps, counts, mode, clips)
        return
    plans = plan_clips(num_source, source_fps, fps, counts, mode, clips)
    length = max(count for count in counts if count <= available)
    assert plans and all(plan.num_frames == length == len(plan.source_indices) for plan in plans)
    assert all(0 <= plan.start and plan.end <= available for plan in plans)
    for plan in plans:
        indices = plan.source_indices
        assert (
            all(a <= b for a, b in zip(indices, indices[1:])) and 0 <= indices[0] and indices[-1] < num_source
        )
        assert indices[0] == math.floor(plan.start * (source_fps / (fps or source_fps)))
    starts = [plan.start for plan in plans]
    assert starts == sorted(set(starts))
    if mode == "head":
        assert starts == [0]
    elif mode == "chunk":
        assert starts == [index * length for index in range(min(clips, available // length))]
    elif clips > 1:
        assert starts[0] == 0 and plans[-1].end == available and len(plans) <= clips


def test_fps_resampling_drops_and_repeats_frames() -> None:
    (down,) = plan_clips(30, Fraction(30), Fraction(16), (9,))
    assert down.source_indices == (0, 1, 3, 5, 7, 9, 11, 13, 15)
    (up,) = plan_clips(5, Fraction(8), Fraction(16), (9,))
    assert up.source_indices == (0, 0, 1, 1, 2, 2, 3, 3, 4)


@given(
    height=st.integers(1, 40).map(lambda n: 16 * n),
    width=st.integers(1, 60).map(lambda n: 16 * n),
    item=st.tuples(st.integers(8, 4000), st.integers(8, 4000)),
)
def test_aspect_buckets_are_on_the_grid_and_nearest_wins(
    height: int, width: int, item: tuple[int, int]
) -> None:
    buckets = aspect_buckets(height, width, 16)
    assert (height, width) in buckets
    for bucket_height, bucket_width in buckets:
        assert (
            bucket_height % 16 == 0
            and bucket_width % 16 == 0
            and bucket_height * bucket_width <= height * width
        )
        assert 1 / MAX_ASPECT <= bucket_width / bucket_height <= MAX_ASPECT or (
            bucket_height,
            bucket_width,
        ) == (height, width)
    chosen = nearest_bucket(*item, buckets)
    distance = lambda bucket: abs(math.log(bucket[1] / bucket[0]) - math.log(item[1] / item[0]))  # noqa: E731
    assert distance(chosen) == min(distance(bucket) for bucket in buckets)


def test_bucket_sizes_off_the_grid_are_refused() -> None:
    with pytest.raises(InputError, match="multiples of 16"):
        aspect_buckets(480, 830, 16)


def test_manifests_keep_bad_rows_as_items_with_a_problem(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "a.mp4").write_bytes(b"")
    (tmp_path / "metadata.csv").write_bytes(
        '\ufefffile_name,text\na.mp4,"a cat, walking"\nb.png,\nc.mp4,na\xefve\n'.encode() + b"d.mp4,caf\xe9\n"
    )
    items = read_manifest(tmp_path)
    assert [item.file_name for item in items] == ["a.mp4", "b.png", "c.mp4", "d.mp4"]
    assert items[0].path == tmp_path / "train" / "a.mp4" and items[0].caption == "a cat, walking"
    assert items[1].is_image and "empty" in items[1].problem
    assert items[2].problem is None and items[2].caption == "na\xefve"
    assert "not valid UTF-8" in items[3].problem and items[3].caption == ""
    (tmp_path / "metadata.csv").write_text("path,caption\n")
    with pytest.raises(InputError, match="needs file_name and text"):
        read_manifest(tmp_path)
    with pytest.raises(InputError, match="no metadata.csv or metadata.jsonl"):
        read_manifest(tmp_path / "train")
