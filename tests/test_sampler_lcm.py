"""The ``lcm`` sampler: x0 re-noised with fresh keyed noise per frame; held frames untouched; seed-reproducible."""

from __future__ import annotations

import torch

import pusa_fw
from pusa_fw import sample
from pusa_fw.flow import frame_view
from pusa_fw.plan import Plan
from pusa_fw.samplers.keyed_noise import draw_noise_key, frame_seed, keyed_frame_noise
from pusa_fw.samplers.lcm import LCM
from pusa_fw.seeding import make_generator
from pusa_fw.testing.contracts import SamplerContract, assert_lands_on_x0
from pusa_fw.testing.fakes import ToyVelocityBackbone

SHAPE = (2, 3, 4, 5)  # B, C, H, W of one frame


def _plan(rows: list[list[float]], windows: list[tuple[int, int]] | None = None,
          held: list[bool] | None = None) -> Plan:
    sigmas = torch.tensor(rows, dtype=torch.float64)
    steps, frames = sigmas.shape[0] - 1, sigmas.shape[1]
    return Plan(
        sigmas=sigmas,
        input_sigmas=sigmas[:-1].clone(),
        windows=torch.tensor(windows if windows is not None else [(0, frames)] * steps),
        held=torch.tensor(held if held is not None else [False] * frames),
    )


class TestLCMContract(SamplerContract):
    """With the exact velocity every plan lands on x0, clean held frames bit-exact (the core contract)."""

    def make_sampler(self) -> LCM:
        return LCM()


def test_lcm_is_registered_by_the_core() -> None:
    assert "lcm" in pusa_fw.list_components("samplers")
    assert isinstance(pusa_fw.get_sampler("lcm"), LCM)


def test_update_law_per_frame_and_still_frames_bit_exact() -> None:
    generator = torch.Generator().manual_seed(3)
    latents = torch.randn(SHAPE[0], SHAPE[1], 4, SHAPE[2], SHAPE[3], generator=generator)
    velocity = torch.randn(latents.shape, generator=generator)
    sigma_from = torch.tensor([0.9, 0.5, 0.3, 0.8], dtype=torch.float64)
    sigma_to = torch.tensor([0.6, 0.0, 0.3, 0.25], dtype=torch.float64)
    rule = LCM()
    state = rule.with_noise_key(rule.start(_plan([[1.0] * 6, [0.0] * 6]), latents), key=1234)
    frames = torch.tensor([5, 1, 2, 0])  # timeline indices of the window's frames
    out, state = rule.step(state, frames, latents.clone(), velocity, sigma_from, sigma_to,
                           torch.ones(4, dtype=torch.int64))
    x0 = latents - frame_view(sigma_from.float()) * velocity
    assert torch.equal(out[:, :, 1], x0[:, :, 1]), "a step to sigma 0 must return x0 itself"
    assert torch.equal(out[:, :, 2], latents[:, :, 2]), "a frame that does not move must stay bit-exact"
    for position, timeline_frame in ((0, 5), (3, 0)):
        level = float(sigma_to[position])
        eps = torch.randn(SHAPE, generator=torch.Generator().manual_seed(frame_seed(1234, timeline_frame, 0)))
        expected = (1 - level) * x0[:, :, position] + level * eps
        torch.testing.assert_close(out[:, :, position], expected, rtol=0, atol=1e-6)
    assert state.updates.tolist() == [1, 1, 0, 0, 0, 1], "only moved frames count an update"


def test_each_update_of_a_frame_draws_fresh_noise() -> None:
    rule = LCM()
    latents = torch.zeros(1, 1, 1, 2, 2)
    state = rule.with_noise_key(rule.start(_plan([[1.0], [0.0]]), latents), key=9)
    draws = []
    for _ in range(2):
        out, state = rule.step(state, slice(0, 1), latents.clone(), torch.zeros_like(latents),
                               torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64),
                               torch.ones(1, dtype=torch.int64))
        draws.append(out / 0.5)
    assert not torch.equal(draws[0], draws[1])
    torch.testing.assert_close(draws[1], keyed_frame_noise(9, [0], [1], (1, 1, 2, 2)), rtol=0, atol=0)


def _run(plan: Plan, seed: int, sampler: str = "lcm") -> torch.Tensor:
    noise = torch.randn(SHAPE[0], SHAPE[1], plan.num_latent_frames, SHAPE[2], SHAPE[3],
                        generator=torch.Generator().manual_seed(100))
    return sample(ToyVelocityBackbone(), plan, noise, sampler=sampler, context=torch.tensor(0.7),
                  generator=make_generator(seed))


def test_reproducible_by_seed_and_different_across_seeds() -> None:
    plan = _plan([[1.0, 1.0, 1.0], [0.6, 0.7, 1.0], [0.3, 0.2, 0.5], [0.0, 0.0, 0.0]])
    assert torch.equal(_run(plan, seed=7), _run(plan, seed=7))
    assert not torch.equal(_run(plan, seed=7), _run(plan, seed=8))
    assert draw_noise_key(make_generator(7)) != draw_noise_key(make_generator(8))


def test_same_noise_whatever_the_window_layout() -> None:
    """Every frame walks 1 -> 0.6 -> 0.3 -> 0: in one window of 3 steps, or two windows one after the other.

    The toy velocity is local to each frame, so only the noise could make the two layouts differ; with a
    sequential noise stream the second window's frames would get the first window's draws.
    """
    path = [1.0, 0.6, 0.3, 0.0]
    one_window = _plan([[level] * 4 for level in path])
    rows = [[path[min(step, 3)]] * 2 + [path[max(step - 3, 0)]] * 2 for step in range(7)]
    two_windows = _plan(rows, windows=[(0, 2)] * 3 + [(2, 4)] * 3)
    assert torch.equal(_run(one_window, seed=5), _run(two_windows, seed=5))
    assert not torch.equal(_run(one_window, seed=5, sampler="euler"), _run(one_window, seed=5))


def test_held_frames_untouched_while_others_are_renoised() -> None:
    held_clean = _plan([[0.0, 1.0, 1.0], [0.0, 0.5, 0.7], [0.0, 0.0, 0.0]], held=[True, False, False])
    out = assert_lands_on_x0(held_clean, "lcm", seed=11)
    assert torch.isfinite(out).all()
