"""Built-in tasks: params validation, frame mapping, held frames, rolling and loop timelines."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from pusa_fw.errors import FrameMapError, PlanError
from pusa_fw.geometry import LatentGeometry
from pusa_fw.frames import latent_frame_count, latent_index, pixel_span
from pusa_fw.plugins import get_registry
from pusa_fw.registry_lookup import lookup
from pusa_fw.sampling import initial_latents, sample
from pusa_fw.testing.fakes import ExactVelocityBackbone, FrameTargets
from pusa_fw.testing.strategies import latents_for
from hypothesis import given, settings
from hypothesis import strategies as st

TASKS = get_registry().names("tasks")


def bad_value(annotation: object) -> object:
    text = str(annotation)
    if "list" in text:
        return "not a list"
    if "dict" in text:
        return 5
    return "not a number" if any(t in text for t in ("int", "float")) else {"bad": object()}


@pytest.mark.parametrize("name", TASKS)
def test_every_params_field_rejects_bad_values_by_name(name: str) -> None:
    cls = lookup("tasks", name)
    for field, info in cls.model_fields.items():
        with pytest.raises(ValidationError) as caught:
            cls(**{field: bad_value(info.annotation)})
        assert field in str(caught.value), f"{name}.{field}: {caught.value}"
    with pytest.raises(ValidationError, match="no_such_field"):
        cls(no_such_field=1)


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("i2v", {"strength": 1.5}, "strength"),
        ("start-end", {"strengths": [0.1, 0.2, 0.3]}, "strengths"),
        ("keyframes", {"positions": []}, "positions"),
        ("keyframes", {"strengths": [2.0]}, "strengths"),
        ("v2v", {"strength": 0.0}, "strength"),
        ("rolling", {"overlap": 81, "window": 81}, "overlap"),
        ("rolling", {"history_noise": 1.0}, "history_noise"),
        ("extension", {"given_frames": 0}, "given_frames"),
    ],
)
def test_out_of_range_values_name_the_field(name: str, params: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        lookup("tasks", name)(**params)


def test_frame_map() -> None:
    assert latent_frame_count(81) == 21
    assert [latent_index(p) for p in (0, 1, 4, 5, 8, 80)] == [0, 1, 1, 2, 2, 20]
    assert list(pixel_span(2)) == [5, 6, 7, 8]
    with pytest.raises(FrameMapError, match="use 77 or 81"):
        latent_frame_count(80)
    with pytest.raises(FrameMapError, match="outside a 81-frame video"):
        latent_index(81, 81)


def test_keyframes_map_pixel_positions_and_reject_collisions() -> None:
    task = lookup("tasks", "keyframes")(positions=[0, 17, 80], strengths=[1.0, 0.5, 0.8])
    plan = task.plan(num_frames=81, num_steps=6)
    assert plan.held.nonzero().squeeze(1).tolist() == [0, 5, 20]
    assert (plan.sigmas[:, 0] == 0).all()  # strength 1 with the multiplier policy is clean
    assert [h.source for h in task.holds(81)] == ["keyframe:0", "keyframe:1", "keyframe:2"]
    with pytest.raises(PlanError, match="pixel frames 17 and 19 fall into the same latent frame 5"):
        lookup("tasks", "keyframes")(positions=[17, 19]).plan(81)
    with pytest.raises(FrameMapError, match="pixel frame 90 is outside a 81-frame video"):
        lookup("tasks", "keyframes")(positions=[90]).plan(81)
    with pytest.raises(PlanError, match="strengths has 2 values for 3 held frames"):
        lookup("tasks", "keyframes")(positions=[0, 8, 16], strengths=[0.5, 0.6]).plan(81)


def test_i2v_is_noised_once_with_the_samples_own_noise() -> None:
    plan = lookup("tasks", "i2v")(strength=0.8).plan(num_frames=17, num_steps=5)
    x0, noise = latents_for(plan, 1)
    start = initial_latents(plan, noise, x0)
    m_sigma0 = float(plan.sigmas[0, 0])
    assert m_sigma0 == pytest.approx(0.2)
    torch.testing.assert_close(start[:, :, 0], (1 - m_sigma0) * x0[:, :, 0] + m_sigma0 * noise[:, :, 0])
    assert torch.equal(start[:, :, 1:], noise[:, :, 1:])


def test_extension_transition_v2v_hold_the_right_frames() -> None:
    ext = lookup("tasks", "extension")(given_frames=13).plan(num_frames=33, num_steps=4)
    assert ext.held.nonzero().squeeze(1).tolist() == [0, 1, 2, 3]
    transition = lookup("tasks", "transition")(tail_frames=5, head_frames=9)
    holds = transition.holds(33)
    assert [(h.frame, h.source, h.source_frame) for h in holds] == [
        (0, "video", 0), (1, "video", 1), (6, "video_b", 0), (7, "video_b", 1), (8, "video_b", 2)]
    v2v = lookup("tasks", "v2v")(strength=0.6).plan(num_frames=17, num_steps=10)
    assert bool(v2v.held.all()) and torch.allclose(v2v.sigmas[0], torch.tensor(0.6, dtype=torch.float64))
    assert v2v.num_steps < 10  # frozen leading steps were pruned
    with pytest.raises(PlanError, match="leaves nothing to generate"):
        lookup("tasks", "extension")(given_frames=33).plan(33)


@pytest.mark.parametrize("name", ["rolling", "loop"])
@pytest.mark.parametrize("schedule", ["shifted", "pyramid"])
def test_long_plans_reach_zero_exactly_once(name: str, schedule: str) -> None:
    params = {"window": 21, "overlap": 5, "schedule": schedule}
    plan = lookup("tasks", name)(**params).plan(num_frames=81, num_steps=4)
    assert plan.ring is (name == "loop")
    for frame in range(plan.num_latent_frames):
        column = plan.sigmas[:, frame]
        first_zero = int((column == 0).nonzero()[0])
        assert (column[first_zero:] == 0).all()
        assert (column[:first_zero] > 0).all()
        moves = (column[1:] < column[:-1]).nonzero().squeeze(1)
        windows = plan.window_mask()[moves, frame]
        assert bool(windows.all())
    widths = (plan.windows[:, 1] - plan.windows[:, 0]).unique().tolist()
    assert widths == [latent_frame_count(21)]


def test_loop_last_window_wraps_with_context_on_both_sides() -> None:
    plan = lookup("tasks", "loop")(window=21, overlap=5).plan(num_frames=81, num_steps=3)
    last = plan.window_frames(plan.num_steps - 1).tolist()
    moving = plan.update_mask()[-1].nonzero().squeeze(1).tolist()
    assert last[-1] < last[0], "the last window must wrap to the start"
    assert last.index(moving[0]) >= 2 and len(last) - 1 - last.index(moving[-1]) >= 2


def test_rolling_history_noise_and_keyframes() -> None:
    task = lookup("tasks", "rolling")(window=21, overlap=9, history_noise=0.05, image=True,
                                      keyframes=[60], keyframe_strengths=[1.0], policy="multiplier")
    plan = task.plan(num_frames=81, num_steps=3)
    context = plan.context_mask()
    history = context & ~plan.held.unsqueeze(0) & (plan.sigmas[:-1] == 0)
    assert history.any()
    assert (plan.input_sigmas[history] == 0.05).all() and (plan.sigmas[:-1][history] == 0).all()
    assert plan.held.nonzero().squeeze(1).tolist() == [0, 15]
    assert (plan.sigmas[:, 15] == 0).all()
    x0, noise = latents_for(plan, 2)
    out = sample(ExactVelocityBackbone(), plan, noise, sampler="unipc", source=x0, context=FrameTargets(x0))
    assert torch.equal(out[:, :, 15], x0[:, :, 15])
    assert float((out - x0).abs().max()) < 2e-5
    with pytest.raises(PlanError, match="already held by the first image"):
        lookup("tasks", "rolling")(image=True, keyframes=[0]).plan(81)


def test_loop_rejects_layouts_without_a_seam() -> None:
    with pytest.raises(PlanError, match="fits in one window"):
        lookup("tasks", "loop")(window=81, overlap=5).plan(num_frames=81)
    with pytest.raises(PlanError, match="window > 2\\*overlap"):
        lookup("tasks", "loop")(window=17, overlap=9).plan(num_frames=81)


def test_window_sizes_are_checked_against_the_codec_geometry() -> None:
    with pytest.raises(PlanError, match="window=80 is not a pixel-frame count of this codec.*use 77 or 81"):
        lookup("tasks", "rolling")(window=80).plan(num_frames=161)
    grouped = LatentGeometry(temporal_stride=4, first_frame_alone=False)
    plan = lookup("tasks", "rolling")(window=32, overlap=8).plan(num_frames=96, num_steps=2, geometry=grouped)
    assert plan.num_latent_frames == 24 and int((plan.windows[:, 1] - plan.windows[:, 0]).max()) == 8


@settings(max_examples=25)
@given(
    multiplier=st.floats(0.05, 1.0),
    window=st.integers(3, 7),
    overlap=st.integers(1, 2),
    schedule=st.sampled_from(["sync", "pyramid"]),
)
def test_rolling_history_multiplier_shows_history_at_m_times_the_window_level(multiplier, window, overlap,
                                                                               schedule) -> None:
    params = {"schedule": "pyramid", "schedule_params": {"ar_step": 1}} if schedule == "pyramid" else {}
    geometry = LatentGeometry(temporal_stride=1, first_frame_alone=False)
    plain = lookup("tasks", "rolling")(window=window, overlap=overlap, **params).plan(17, 4, 3.0, geometry)
    shown = lookup("tasks", "rolling")(window=window, overlap=overlap, history_multiplier=multiplier,
                                       **params).plan(17, 4, 3.0, geometry)
    assert torch.equal(shown.sigmas, plain.sigmas)  # the states, and so the output's history, are unchanged
    inside = plain.window_mask()
    history = inside & (plain.sigmas[:-1] == 0) & (plain.sigmas[1:] == 0)
    generating = inside & (plain.sigmas[:-1] > 0)
    level = torch.where(generating, plain.input_sigmas, torch.zeros_like(plain.input_sigmas)).amax(dim=1)
    assert history.any()
    expected = (multiplier * level).unsqueeze(1).expand_as(history)
    assert torch.equal(shown.input_sigmas[history], expected[history])
    assert torch.equal(shown.input_sigmas[~history], plain.input_sigmas[~history])


def test_rolling_history_is_shown_one_way() -> None:
    with pytest.raises(ValidationError, match="history_noise=0.02 and history_multiplier=0.3"):
        lookup("tasks", "rolling")(history_noise=0.02, history_multiplier=0.3)
    with pytest.raises(ValidationError, match="history_multiplier"):
        lookup("tasks", "rolling")(history_multiplier=1.5)
