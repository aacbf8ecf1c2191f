"""The DESIGN.md invariants as Hypothesis properties over every registered task, schedule, policy, sampler."""

from __future__ import annotations

import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from pusa_fw.flow import frame_view
from pusa_fw.plan import Plan
from pusa_fw.plugins import get_registry
from pusa_fw.sampling import sample
from pusa_fw.task import compose_plan
from pusa_fw.testing.contracts import assert_lands_on_x0
from pusa_fw.testing.fakes import ExactVelocityBackbone, FrameTargets, ToyVelocityBackbone
from pusa_fw.testing.strategies import base_grids, latents_for, plans, task_plans

SAMPLERS = get_registry().names("samplers")


def check_plan_invariants(plan: Plan) -> None:
    """Independent re-statement of the plan invariants (the constructor checks them too)."""
    sig, inp = plan.sigmas, plan.input_sigmas
    assert torch.isfinite(sig).all() and torch.isfinite(inp).all()
    assert ((sig >= 0) & (sig <= 1)).all() and ((inp >= 0) & (inp <= 1)).all()
    rising = sig[1:] > sig[:-1]
    assert not (rising & ~plan.held).any(), "only held frames may be re-noised"
    assert (sig[-1] == 0).all(), "every frame ends at sigma 0"
    starts, stops = plan.windows[:, 0], plan.windows[:, 1]
    assert ((starts >= 0) & (starts < plan.num_latent_frames) & (stops > starts)).all()
    assert (stops <= (starts + plan.num_latent_frames if plan.ring else plan.num_latent_frames)).all()
    assert not (plan.update_mask() & ~plan.window_mask()).any(), "updates happen inside windows only"


@given(plans())
def test_random_plans_hold_invariants(plan: Plan) -> None:
    check_plan_invariants(plan)


@given(task_plans())
def test_every_task_plan_holds_invariants(named: tuple[str, Plan]) -> None:
    check_plan_invariants(named[1])


@given(plans(), st.sampled_from(SAMPLERS), st.integers(0, 2**16))
def test_every_sampler_lands_on_x0_over_any_plan(plan: Plan, sampler: str, seed: int) -> None:
    assert_lands_on_x0(plan, sampler, seed)


@given(task_plans(), st.sampled_from(SAMPLERS), st.integers(0, 2**16))
def test_every_sampler_lands_on_x0_for_every_task(named: tuple[str, Plan], sampler: str, seed: int) -> None:
    assert_lands_on_x0(named[1], sampler, seed)


@given(base_grids(max_frames=5), base_grids(max_frames=1), st.data(), st.sampled_from(SAMPLERS))
def test_frame_update_depends_only_on_its_own_sigmas(
    grid: torch.Tensor, other: torch.Tensor, data: st.DataObject, sampler: str
) -> None:
    steps = grid.shape[0] - 1
    assume(other.shape[0] - 1 <= steps)
    column = torch.cat([other[:, 0], torch.zeros(steps + 1 - other.shape[0])])
    frame = data.draw(st.integers(0, grid.shape[1] - 1))
    changed = grid.clone()
    changed[:, frame] = column
    plan_a, plan_b = compose_plan(grid, prune=False), compose_plan(changed, prune=False)
    _, noise = latents_for(plan_a, 7)
    c = torch.randn_like(noise)
    out_a = sample(ToyVelocityBackbone(), plan_a, noise, sampler=sampler, context=c)
    out_b = sample(ToyVelocityBackbone(), plan_b, noise, sampler=sampler, context=c)
    keep = [f for f in range(grid.shape[1]) if f != frame]
    assert torch.equal(out_a[:, :, keep], out_b[:, :, keep])


@given(base_grids(), st.data(), st.sampled_from(SAMPLERS))
def test_zero_length_step_is_identity(grid: torch.Tensor, data: st.DataObject, sampler: str) -> None:
    row = data.draw(st.integers(0, grid.shape[0] - 2))
    stalled = torch.cat([grid[: row + 1], grid[row : row + 1], grid[row + 1 :]])
    plan, plan_stalled = compose_plan(grid, prune=False), compose_plan(stalled, prune=False)
    _, noise = latents_for(plan, 3)
    c = torch.randn_like(noise)
    toy_a, toy_b = ToyVelocityBackbone(), ToyVelocityBackbone()
    out = sample(toy_a, plan, noise, sampler=sampler, context=c)
    out_stalled = sample(toy_b, plan_stalled, noise, sampler=sampler, context=c)
    assert torch.equal(out, out_stalled)


@given(st.integers(0, 2**16))
def test_rule_step_of_length_zero_returns_input_bit_exact(seed: int) -> None:
    registry = get_registry()
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 2, 3, 2, 2, generator=generator)
    v = torch.randn_like(x)
    sigma = torch.rand(3, generator=generator).clamp(0.01, 0.99)
    plan = compose_plan(torch.stack([torch.ones(3), torch.zeros(3)]))
    for name in SAMPLERS:
        rule = registry.get("samplers", name)
        state = rule.start(plan, x)
        out, _ = rule.step(state, slice(0, 3), x, v, sigma, sigma.clone(), torch.ones(3, dtype=torch.int64))
        assert torch.equal(out, x), name


def scalar_euler(x: torch.Tensor, sigmas: list[float], c: torch.Tensor) -> torch.Tensor:
    """Reference loop with one scalar sigma per step (as the base Wan model is sampled)."""
    toy = ToyVelocityBackbone()
    for s, s_next in zip(sigmas, sigmas[1:]):
        sigma = torch.tensor(s, dtype=torch.float32)
        v = toy.velocity(x, sigma.expand(x.shape[0], x.shape[2]), c)
        x = x + (torch.tensor(s_next, dtype=torch.float32) - sigma) * v
    return x


@given(base_grids(max_frames=1), st.integers(1, 6), st.integers(0, 2**16))
def test_equal_frames_reduce_to_scalar_loop(column: torch.Tensor, frames: int, seed: int) -> None:
    grid = column.repeat(1, frames)
    plan = compose_plan(grid, prune=False)
    _, noise = latents_for(plan, seed)
    c = torch.randn_like(noise)
    ours = sample(ToyVelocityBackbone(), plan, noise.clone(), sampler="euler", context=c)
    reference = scalar_euler(noise.clone(), column[:, 0].tolist(), c)
    torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-6)  # fused multiply-add rounding only


@given(task_plans(), st.integers(0, 2**16))
def test_clean_held_frames_stay_bit_exact_with_any_model(named: tuple[str, Plan], seed: int) -> None:
    _, plan = named
    x0, noise = latents_for(plan, seed)
    out = sample(ToyVelocityBackbone(), plan, noise, source=x0, context=torch.tensor(0.5))
    clean = plan.held & (plan.sigmas == 0).all(dim=0)
    assert torch.equal(out[:, :, clean], x0[:, :, clean])


@given(task_plans())
def test_timeline_frames_reach_zero_once_and_stay(named: tuple[str, Plan]) -> None:
    _, plan = named
    sig = plan.sigmas
    for frame in range(plan.num_latent_frames):
        column = sig[:, frame]
        zero_rows = (column == 0).nonzero().squeeze(1)
        first = int(zero_rows[0])
        assert (column[first:] == 0).all() or bool(plan.held[frame]), f"frame {frame} left 0 after reaching it"
        if not bool(plan.held[frame]):
            assert (column[first:] == 0).all()


def test_exact_backbone_is_exact_on_the_straight_path() -> None:
    x0, eps = torch.randn(1, 2, 3, 2, 2), torch.randn(1, 2, 3, 2, 2)
    sigmas = torch.tensor([[0.3, 0.7, 1.0]])
    x = (1 - frame_view(sigmas)) * x0 + frame_view(sigmas) * eps
    v = ExactVelocityBackbone().velocity(x, sigmas, x0)
    torch.testing.assert_close(v, eps - x0, atol=1e-5, rtol=0)
    assert FrameTargets(x0).for_frames(torch.tensor([2, 0])).shape == (1, 2, 2, 2, 2)
