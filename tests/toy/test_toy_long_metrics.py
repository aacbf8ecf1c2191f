"""Per-frame long-video scores (`pusa_fw_toy.long_metrics`, `long_summary`, `long_gates`): the true bounced
clip scores perfectly at any length; a square that stops at a wall, changes colour, slows down or leaves the
frame is caught where it happens; the gates read the right rows."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pusa_fw_toy.long_gates import LONG_GATES, check_long_gates, gate_score
from pusa_fw_toy.long_metrics import SEGMENT, score_long_video, segments
from pusa_fw_toy.long_summary import summarise_long
from pusa_fw_toy.walls import wall_limits
from pusa_fw_toy.world import DIRECTIONS, HELD_OUT_SEED_BASE, WorldConfig, render_clip, render_headed

WORLD = WorldConfig(walls="bounce")


@settings(max_examples=25)
@given(seed=st.integers(0, 10**6), frames=st.integers(12, 90))
def test_the_true_bounced_clip_scores_perfectly(seed: int, frames: int) -> None:
    clip = render_clip(WORLD, HELD_OUT_SEED_BASE + seed, frames)
    score = score_long_video(clip.video, clip, WORLD, loop=True)
    assert bool(score.valid.all() and score.colour_ok.all() and score.size_ok.all() and score.inside.all())
    assert float((score.step_px[1:] - WORLD.speed).abs().max()) < 1e-6, "unfolded steps are the world's speed"
    assert bool(score.segment_direction_ok.all())
    assert score.turned == score.contacts
    turns = sum(a != b for a, b in zip(clip.directions, clip.directions[1:-1]))
    assert score.contacts >= turns - 1  # every fold but one at the very end is seen as a contact
    assert float(score.error_px.max()) < 1e-5  # float32 pixels: the centroid is exact to float32 rounding
    assert math.isfinite(score.seam_px)


@settings(max_examples=20)
@given(frames=st.integers(2, 200))
def test_segments_cover_every_step_once_in_runs_of_eight(frames: int) -> None:
    parts = segments(frames)
    steps = [step for part in parts for step in part]
    assert steps == list(range(1, frames))
    assert all(len(part) == SEGMENT for part in parts[:-1])


def _stops_at_the_wall(frames: int = 40) -> tuple:
    """A clip whose square rides the first wall it meets and never turns (nose still into the wall)."""
    clip = render_clip(WORLD, HELD_OUT_SEED_BASE + 3, frames)
    low, high = wall_limits(WORLD.size, WORLD.square)
    unit = torch.tensor(DIRECTIONS[clip.direction], dtype=torch.float64)
    times = torch.arange(frames, dtype=torch.float64)[:, None]
    centres = (clip.centres[0] + times * unit * WORLD.speed).clamp(low, high)
    video = render_headed(WORLD, centres, unit.expand(frames, 2), clip.colour)
    return video, clip


def test_a_square_that_stops_at_a_wall_fails_turns_and_speed() -> None:
    video, clip = _stops_at_the_wall()
    score = score_long_video(video, clip, WORLD)
    assert score.contacts == 1 and score.turned == 0, "one contact (it stays), never turned"
    assert bool(score.valid.all()) and bool(score.inside.all())
    assert float(score.segment_speed[-1]) < 0.2, "standing still at the wall"
    row = summarise_long([score], WORLD)["metrics"]
    assert row["turns"] == 0.0 and row["speed_kept_videos"] == 0.0 and row["speed_median"] < 0.5
    assert row["trajectory_error_px"] > 1.0


def test_a_colour_change_and_a_lost_square_are_caught_in_their_frames() -> None:
    clip = render_clip(WORLD, HELD_OUT_SEED_BASE + 11, 33)
    video = clip.video.clone()
    video[:, 20:] = video[:, 20:].roll(1, dims=0)  # the body lights the next channel from frame 20 on
    video[:, 30:] = -1.0  # and the square is gone from frame 30
    score = score_long_video(video, clip, WORLD)
    assert score.colour_ok[:20].all() and not score.colour_ok[20:].any()
    assert score.valid[:30].all() and not score.valid[30:].any()
    row = summarise_long([score], WORLD)["metrics"]
    assert row["colour_kept"] == pytest.approx(20 / 30)
    assert row["valid"] == pytest.approx(30 / 33) and row["valid_gap"] == pytest.approx(3 / 8)


def test_a_square_past_the_edge_is_not_inside() -> None:
    clip = render_clip(WORLD, HELD_OUT_SEED_BASE + 5, 17)
    shifted = clip.centres.clone()
    shifted[8:, 0] = WORLD.size - WORLD.square / 2 + 1.5  # 1.5 px past the right edge from frame 8
    video = render_headed(WORLD, shifted, clip.headings, clip.colour)
    score = score_long_video(video, clip, WORLD)
    assert not score.inside[8:][score.valid[8:]].any()


def test_gates_read_the_best_schedules_rows_and_rank_by_gates_passed() -> None:
    truth = [score_long_video(clip.video, clip, WORLD, loop=True)
             for clip in (render_clip(WORLD, HELD_OUT_SEED_BASE + seed, 65) for seed in range(4))]
    good = summarise_long(truth, WORLD)
    video, clip = _stops_at_the_wall(65)
    bad = summarise_long([score_long_video(video, clip, WORLD)], WORLD)
    rows = [{"task": "rolling", "frames": 65, "schedule": "good", **good},
            {"task": "rolling", "frames": 65, "schedule": "bad", **bad},
            {"task": "loop", "frames": 65, "schedule": "good", **good}]
    assert gate_score(rows[0]) > gate_score(rows[1])
    gates = check_long_gates(rows, "good", 65)
    assert [gate["gate"] for gate in gates] == [gate for gate, *_ in LONG_GATES]
    rolling_gates = [gate for gate in gates if gate["task"] == "rolling"]
    assert all(gate["passed"] for gate in rolling_gates), rolling_gates
    missing_loop = check_long_gates(rows[:2], "good", 65)
    assert not missing_loop[-1]["passed"] and missing_loop[-1]["value"] is None
    assert not any(gate["passed"] for gate in check_long_gates(rows, "bad", 65) if gate["gate"] == "turns back at walls")
