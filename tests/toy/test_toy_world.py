"""The toy world: deterministic from a seed, true to its rules, and the tracker reads it back exactly."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from pusa_fw_toy.tracker import track_video
from pusa_fw_toy.world import COLOURS, DIRECTIONS, WorldConfig, render_clip, render_square

SEEDS = st.integers(min_value=0, max_value=2**40)
WORLDS = st.builds(
    WorldConfig,
    size=st.sampled_from([16, 24, 32]),
    num_frames=st.integers(2, 9),
    square=st.floats(3.0, 7.0),
    nose=st.floats(0.5, 1.5),
    speed=st.floats(0.0, 1.0),
)


@given(seed=SEEDS)
def test_same_seed_same_clip_bit_for_bit(seed: int) -> None:
    first, second = render_clip(WorldConfig(), seed), render_clip(WorldConfig(), seed)
    assert torch.equal(first.video, second.video)
    assert torch.equal(first.centres, second.centres)
    assert (first.caption, first.direction, first.colour) == (second.caption, second.direction, second.colour)


def test_different_seeds_give_different_clips() -> None:
    videos = [render_clip(WorldConfig(), seed).video for seed in range(20)]
    assert all(not torch.equal(videos[0], other) for other in videos[1:])
    clips = [render_clip(WorldConfig(), seed) for seed in range(200)]
    assert {clip.colour for clip in clips} == set(COLOURS)
    assert {clip.direction for clip in clips} == set(DIRECTIONS)


@given(world=WORLDS, seed=SEEDS)
def test_clip_follows_the_motion_law_inside_the_frame(world: WorldConfig, seed: int) -> None:
    clip = render_clip(world, seed)
    half = world.square / 2
    assert clip.video.shape == (3, world.num_frames, world.size, world.size)
    assert float(clip.video.min()) >= -1 and float(clip.video.max()) <= 1
    assert bool((clip.centres >= half - 1e-9).all()) and bool((clip.centres <= world.size - half + 1e-9).all())
    steps = clip.centres[1:] - clip.centres[:-1]
    expected = clip.heading * world.speed
    assert torch.allclose(steps, expected.expand_as(steps), atol=1e-9)
    assert clip.colour in clip.caption and "square" in clip.caption
    assert clip.direction not in clip.caption.split()


def test_caption_names_the_direction_when_asked() -> None:
    clip = render_clip(WorldConfig(caption_direction=True), 7)
    assert clip.caption == f"a {clip.colour} square moving {clip.direction}"


@given(world=WORLDS, seed=SEEDS)
def test_tracker_recovers_the_true_trajectory(world: WorldConfig, seed: int) -> None:
    clip = render_clip(world, seed)
    track = track_video(clip.video, world)
    assert bool(track.valid.all())
    assert float((track.centres - clip.centres).norm(dim=1).max()) < 0.1
    assert track.direction_words() == [clip.direction] * world.num_frames
    assert torch.allclose(track.headings, clip.heading.expand_as(track.headings), atol=1e-6)


def test_tracker_error_is_far_below_a_tenth_of_a_pixel_on_many_clips() -> None:
    world = WorldConfig()
    worst = max(
        float((track_video(clip.video, world).centres - clip.centres).norm(dim=1).max())
        for clip in (render_clip(world, seed) for seed in range(300))
    )
    assert worst < 1e-3


def test_tracker_flags_frames_without_a_square() -> None:
    world = WorldConfig()
    clip = render_clip(world, 1)
    video = clip.video.clone()
    video[:, 2] = -1.0  # empty frame
    video[:, 3] = torch.rand(3, world.size, world.size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    one = render_square(world, torch.tensor([[3.0, 3.0]]), (1.0, 0.0), "red")[:, 0]
    other = render_square(world, torch.tensor([[12.5, 12.0]]), (0.0, 1.0), "blue")[:, 0]
    video[:, 4] = torch.maximum(one, other)  # two squares
    track = track_video(video, world)
    assert track.valid.tolist() == [True, True, False, False, False, True, True, True, True]
    assert bool(torch.isnan(track.centres[2]).all())


@pytest.mark.parametrize("values", [
    {"nose": 5.0}, {"colours": ("purple",)}, {"size": 8, "square": 5.0, "speed": 1.0},
])
def test_bad_world_settings_are_rejected(values: dict) -> None:
    with pytest.raises(ValidationError):
        WorldConfig(**values)
