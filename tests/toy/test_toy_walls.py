"""The toy world with walls: the square bounces by the fold law, never leaves the frame, keeps its speed,
turns its nose exactly at contacts, and the tracker and the metrics read bounce clips back."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from pusa_fw_toy.metrics import score_video, shown_heading, unfolded_heading
from pusa_fw_toy.tracker import coverage_maps, track_video
from pusa_fw_toy.walls import bounce_path, fold_step, turns_back, unfold_centres, unfold_words, wall_limits
from pusa_fw_toy.world import DIRECTIONS, WorldConfig, render_clip, render_headed

SEEDS = st.integers(min_value=0, max_value=2**40)
BOUNCE_WORLDS = st.builds(
    WorldConfig,
    size=st.sampled_from([16, 24, 32]),
    num_frames=st.integers(2, 80),
    square=st.floats(3.0, 7.0),
    nose=st.floats(0.5, 1.5),
    speed=st.floats(0.0, 4.0),
    walls=st.just("bounce"),
)


def _path_length(before: torch.Tensor, after: torch.Tensor, heading: torch.Tensor, flipped: torch.Tensor,
                 low: float, high: float) -> float:
    """Distance travelled in one frame, counting a fold as the way to the wall and back."""
    per_axis = []
    for axis in range(2):
        if bool(flipped[axis]):
            wall = high if float(heading[axis]) > 0 else low
            per_axis.append(abs(wall - float(before[axis])) + abs(wall - float(after[axis])))
        else:
            per_axis.append(abs(float(after[axis]) - float(before[axis])))
    return math.hypot(*per_axis)


@given(world=BOUNCE_WORLDS, seed=SEEDS)
def test_bounce_clip_stays_inside_keeps_its_speed_and_flips_exactly_at_contacts(world: WorldConfig,
                                                                                 seed: int) -> None:
    clip = render_clip(world, seed)
    low, high = wall_limits(world.size, world.square)
    assert clip.video.shape == (3, world.num_frames, world.size, world.size)
    assert bool((clip.centres >= low).all()) and bool((clip.centres <= high).all())
    shape, _ = coverage_maps(clip.video)
    assert torch.allclose(shape.sum(dim=(1, 2)), torch.full((world.num_frames,), world.square**2,
                                                             dtype=torch.float64), rtol=1e-5)
    assert torch.equal(clip.headings[0], clip.heading) and clip.directions[0] == clip.direction
    for frame in range(world.num_frames - 1):
        before, after = clip.centres[frame], clip.centres[frame + 1]
        heading, next_heading = clip.headings[frame], clip.headings[frame + 1]
        target = before + heading * world.speed
        contact = (target > high) | (target < low)
        assert torch.equal(next_heading, torch.where(contact, -heading, heading)), frame
        length = _path_length(before, after, heading, contact, low, high)
        assert abs(length - world.speed) < 1e-9, (frame, length)
        assert clip.directions[frame + 1] == next(
            name for name, unit in DIRECTIONS.items() if unit == tuple(float(v) for v in next_heading))


@given(
    x=st.floats(0.0, 1.0), y=st.floats(0.0, 1.0), angle=st.floats(0.0, 2 * math.pi),
    speed_share=st.floats(0.0, 1.0), size=st.sampled_from([16, 32]), square=st.floats(2.0, 8.0),
)
def test_fold_step_flips_each_axis_that_meets_a_wall_and_keeps_the_path_length(
        x: float, y: float, angle: float, speed_share: float, size: int, square: float) -> None:
    low, high = wall_limits(size, square)
    position = torch.tensor([low + x * (high - low), low + y * (high - low)], dtype=torch.float64)
    heading = torch.tensor([math.cos(angle), math.sin(angle)], dtype=torch.float64)
    speed = speed_share * (high - low)
    moved, turned, contact = fold_step(position, heading, speed, low, high)
    assert bool((moved >= low).all()) and bool((moved <= high).all())
    target = position + heading * speed
    assert contact.tolist() == [bool(target[a] > high or target[a] < low) for a in range(2)]
    assert torch.equal(turned, torch.where(contact, -heading, heading))
    assert abs(_path_length(position, moved, heading, contact, low, high) - speed) < 1e-9


def test_a_corner_flips_both_axes() -> None:
    low, high = wall_limits(16, 4.0)
    position = torch.tensor([high - 0.2, low + 0.3], dtype=torch.float64)
    heading = torch.tensor([1.0, -1.0], dtype=torch.float64) / math.sqrt(2)
    moved, turned, contact = fold_step(position, heading, 1.0, low, high)
    assert contact.tolist() == [True, True]
    assert torch.equal(turned, -heading)
    step = 1 / math.sqrt(2)
    assert torch.allclose(moved, torch.tensor([high - (step - 0.2), low + (step - 0.3)], dtype=torch.float64))


def test_ending_exactly_on_a_wall_is_not_a_contact_and_the_next_move_folds() -> None:
    low, high = wall_limits(16, 4.0)
    centres, headings = bounce_path(torch.tensor([high - 2.0, 8.0], dtype=torch.float64),
                                    torch.tensor([1.0, 0.0], dtype=torch.float64), 1.0, low, high, 5)
    assert centres[:, 0].tolist() == [high - 2, high - 1, high, high - 1, high - 2]
    assert headings[:, 0].tolist() == [1.0, 1.0, 1.0, -1.0, -1.0]


def test_long_bounce_clips_turn_at_the_walls_and_start_anywhere_they_fit() -> None:
    world = WorldConfig(walls="bounce", num_frames=65)
    low, high = wall_limits(world.size, world.square)
    opposite = {"right": "left", "left": "right", "up": "down", "down": "up"}
    starts = []
    for seed in range(40):
        clip = render_clip(world, seed)
        starts.append(clip.centres[0])
        turns = [t for t in range(1, 65) if clip.directions[t] != clip.directions[t - 1]]
        assert len(turns) >= 4, seed  # 64 px of travel in 11 px of room
        for frame in turns:
            assert clip.directions[frame] == opposite[clip.directions[frame - 1]]
            axis = 0 if clip.directions[frame] in ("left", "right") else 1
            position = float(clip.centres[frame, axis])
            nearest = min(abs(position - low), abs(position - high))
            assert nearest <= world.speed
    starts_tensor = torch.stack(starts)
    assert float(starts_tensor.min()) < low + 1.5 and float(starts_tensor.max()) > high - 1.5


def test_num_frames_per_call_matches_the_world_and_extends_the_same_path() -> None:
    world = WorldConfig(walls="bounce")
    for seed in (0, 5, 123):
        long = render_clip(world, seed, num_frames=129)
        same = render_clip(world.model_copy(update={"num_frames": 129}), seed)
        short = render_clip(world, seed)
        assert torch.equal(long.video, same.video) and torch.equal(long.centres, same.centres)
        assert torch.equal(long.video[:, :9], short.video) and long.directions[:9] == short.directions
    with pytest.raises(ValidationError, match="walls='bounce'"):
        render_clip(WorldConfig(), 0, num_frames=65)


def test_default_world_has_no_walls_and_renders_as_before() -> None:
    """Digests of the clips the renderer made before walls existed (computed with that code)."""
    assert WorldConfig().walls == "none"
    before = {0: "8042c7a04f9de877ee6daea55095ad68", 1: "9850661ab94b3fded807766d4a25aa7d",
              2: "0f1bd0793c8152ffbb809fa52d36be39"}
    for seed, digest in before.items():
        clip = render_clip(WorldConfig(), seed)
        data = clip.video.numpy().tobytes() + clip.centres.numpy().tobytes()
        assert hashlib.sha256(data).hexdigest()[:32] == digest
        assert clip.directions == (clip.direction,) * 9


@pytest.mark.parametrize("values", [
    {"walls": "bounce", "size": 16, "square": 5.0, "speed": 11.5}, {"walls": "mirror"},
])
def test_bad_wall_settings_are_rejected(values: dict) -> None:
    with pytest.raises(ValidationError):
        WorldConfig(**values)


@given(world=BOUNCE_WORLDS, seed=SEEDS)
def test_tracker_reads_bounce_clips_back(world: WorldConfig, seed: int) -> None:
    clip = render_clip(world, seed)
    track = track_video(clip.video, world)
    assert bool(track.valid.all())
    assert float((track.centres - clip.centres).norm(dim=1).max()) < 0.1
    assert track.direction_words() == list(clip.directions)


def test_metrics_score_a_true_bounce_clip_as_one_straight_path() -> None:
    world = WorldConfig(walls="bounce", num_frames=65)
    for seed in range(6):
        clip = render_clip(world, seed)
        scores = score_video(clip.video, clip, world, given=[0])
        assert scores["fit_px"] < 1e-3 and abs(scores["speed"] - world.speed) < 1e-3, (seed, scores)
        assert scores["direction"] == clip.direction and scores["direction_ok"] == 1.0
        shown = score_video(clip.video, clip, world, given=[], reference="heading")
        assert shown["direction_ok"] == 1.0


def test_metrics_penalise_a_turn_away_from_the_walls_and_a_bounce_without_a_turn() -> None:
    world = WorldConfig(walls="bounce", num_frames=9)
    clip = render_clip(world, 0)
    x = [6.0, 7.0, 8.0, 9.0, 10.0, 9.0, 8.0, 7.0, 6.0]  # turns in the middle of the frame
    centres = torch.tensor([[value, 8.0] for value in x], dtype=torch.float64)
    headings = torch.tensor([[1.0, 0.0]] * 5 + [[-1.0, 0.0]] * 4, dtype=torch.float64)
    early_turn = render_headed(world, centres, headings, "red")
    assert score_video(early_turn, clip, world, given=[0])["fit_px"] > 0.5
    low, high = wall_limits(world.size, world.square)
    folded, _ = bounce_path(torch.tensor([high - 3.0, 8.0], dtype=torch.float64),
                            torch.tensor([1.0, 0.0], dtype=torch.float64), 1.0, low, high, 9)
    no_turn = render_headed(world, folded, torch.tensor([[1.0, 0.0]] * 9, dtype=torch.float64), "red")
    assert score_video(no_turn, clip, world, given=[0])["fit_px"] > 0.5


def test_unfold_mirrors_about_the_wall_the_nose_pointed_at() -> None:
    centres = torch.tensor([[9.0, 3.0], [10.0, 3.0], [9.5, 3.0], [8.5, 3.0]], dtype=torch.float64)
    assert turns_back(["right", "up", "left", None, "right"]) == {4: "left"}, "sideways words are not turns"
    assert turns_back(["right", None, "left"]) == {2: "right"}, "unreadable frames are skipped"
    unfolded = unfold_centres(centres, ["right", "right", "left", None], 2.5, 10.5)
    assert unfolded[:, 0].tolist() == [9.0, 10.0, 11.5, 12.5]
    assert unfolded[:, 1].tolist() == [3.0] * 4


@given(world=BOUNCE_WORLDS, seed=SEEDS)
def test_a_true_bounce_clip_shows_its_first_heading_in_every_unfolded_frame(world: WorldConfig, seed: int) -> None:
    clip = render_clip(world, seed)
    assert unfold_words(list(clip.directions)) == [clip.direction] * world.num_frames


WORDS = st.lists(st.sampled_from(["right", "left", "up", "down", None]), min_size=1, max_size=30)


@given(words=WORDS)
def test_unfolding_changes_no_word_of_a_path_without_a_turn_back(words: list) -> None:
    readable = [word for word in words if word is not None]
    turns = {("right", "left"), ("left", "right"), ("up", "down"), ("down", "up")}
    unfolded = unfold_words(words)
    axis = {"right": 0, "left": 0, "up": 1, "down": 1, None: None}
    assert [axis[word] for word in unfolded] == [axis[word] for word in words]
    if not any(pair in turns for pair in zip(readable, readable[1:])):
        assert unfolded == words
    else:
        first_turn = next(index for index, pair in enumerate(zip(readable, readable[1:])) if pair in turns)
        turned = [word for word in unfolded if word is not None][first_turn + 1]
        assert turned == readable[first_turn], "the first turn back reads as the heading before it"


def test_t2v_reference_is_the_wall_less_one_on_a_clip_without_contacts() -> None:
    """A video with no turn back reads the heading most frames show, as in the world without walls: a nose
    drawn sideways in frame 0 alone does not decide the reference, a nose sideways in most frames does."""
    world = WorldConfig(walls="bounce", num_frames=9)
    clip = render_clip(world, 0)
    centres = torch.tensor([[4.0 + t, 8.0] for t in range(9)], dtype=torch.float64)
    glitch = torch.tensor([[0.0, -1.0]] + [[1.0, 0.0]] * 8, dtype=torch.float64)
    video = render_headed(world, centres, glitch, "red")
    track = track_video(video, world)
    assert unfolded_heading(track) == shown_heading(track) == "right"
    assert score_video(video, clip, world, given=[], reference="heading")["direction_ok"] == 1.0
    sideways = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, -1.0]] * 6, dtype=torch.float64)
    moving_right_nose_up = render_headed(world, centres, sideways, "red")
    assert score_video(moving_right_nose_up, clip, world, given=[], reference="heading")["direction_ok"] == 0.0


def test_a_bounce_video_reads_its_first_heading_after_the_turn_too() -> None:
    world = WorldConfig(walls="bounce", num_frames=9)
    low, high = wall_limits(world.size, world.square)
    folded, headings = bounce_path(torch.tensor([high - 2.0, 8.0], dtype=torch.float64),
                                   torch.tensor([1.0, 0.0], dtype=torch.float64), 1.0, low, high, 9)
    video = render_headed(world, folded, headings, "red")
    track = track_video(video, world)
    assert track.direction_words().count("left") > track.direction_words().count("right")
    assert unfolded_heading(track) == "right" and shown_heading(track) == "left"
    assert score_video(video, render_clip(world, 0), world, given=[], reference="heading")["direction_ok"] == 1.0


def test_render_headed_refuses_a_heading_that_is_not_a_direction() -> None:
    world = WorldConfig(walls="bounce")
    with pytest.raises(ValueError, match="frames \\[1\\]"):
        render_headed(world, torch.full((2, 2), 8.0, dtype=torch.float64),
                      torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64), "red")
