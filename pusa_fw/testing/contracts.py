"""Contract tests for plugin authors: subclass, say what to test, and pytest runs the checks.

    from pusa_fw.testing.contracts import ScheduleContract

    class TestMySchedule(ScheduleContract):
        def make_schedule(self):
            return MySchedule(width=3)

Each contract checks the invariants pusa-fw relies on (see DESIGN.md) with Hypothesis.
"""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..backbone import supports_partial
from ..errors import InputError
from ..plan import Plan
from ..policy import ConditioningPolicy
from ..samplers.base import SamplerRule
from ..sampling import sample
from ..schedule import TimestepSchedule
from ..task import Hold, compose_plan
from .fakes import ExactVelocityBackbone, FrameTargets
from .strategies import base_grids, latents_for, plans

# One @given method serves every subclass: that is the point of a contract, not a flaky executor.
contract_settings = settings(deadline=None, suppress_health_check=[HealthCheck.differing_executors])


def assert_lands_on_x0(plan: Plan, sampler: SamplerRule | str, seed: int = 0, atol: float = 2e-5) -> torch.Tensor:
    """Sample `plan` with the exact-velocity backbone and assert the result is x0; clean held frames bit-exact."""
    x0, noise = latents_for(plan, seed)
    out = sample(ExactVelocityBackbone(), plan, noise, sampler=sampler, source=x0, context=FrameTargets(x0))
    error = float((out - x0).abs().max())
    assert error <= atol, f"sampler {sampler!r} missed x0 by {error:.3g} (allowed {atol})"
    clean = plan.held & (plan.sigmas == 0).all(dim=0)
    assert torch.equal(out[:, :, clean], x0[:, :, clean]), "a frame held clean changed"
    return out


class ScheduleContract:
    """Checks a `TimestepSchedule`: valid grids of the right width for any size. Implement `make_schedule`.

    Set ``min_frames`` when the schedule needs more than one frame.
    """

    min_frames = 1

    def make_schedule(self) -> TimestepSchedule:
        raise NotImplementedError

    @contract_settings
    @given(data=st.data(), steps=st.integers(1, 12))
    def test_grid_is_valid(self, data: st.DataObject, steps: int) -> None:
        frames = data.draw(st.integers(self.min_frames, self.min_frames + 15))
        grid = self.make_schedule().grid(frames, steps)
        assert grid.shape[1] == frames and grid.shape[0] >= steps + 1
        assert torch.isfinite(grid).all() and (grid >= 0).all() and (grid <= 1).all()
        assert (grid[1:] <= grid[:-1]).all(), "a base grid must be non-increasing per frame"
        assert (grid[-1] == 0).all(), "every frame must end at sigma 0"
        moves = (grid[1:] < grid[:-1]).sum(dim=0)
        assert (moves >= 1).all(), "every frame must be denoised at least once"

    def test_is_deterministic(self) -> None:
        schedule = self.make_schedule()
        frames = self.min_frames + 4
        assert torch.equal(schedule.grid(frames, 4), schedule.grid(frames, 4))


class PolicyContract:
    """Checks a `ConditioningPolicy` inside plans, and that samplers stay exact with it."""

    def make_policy(self) -> ConditioningPolicy:
        raise NotImplementedError

    @contract_settings
    @given(grid=base_grids(), data=st.data())
    def test_path_is_valid_in_a_plan(self, grid: torch.Tensor, data: st.DataObject) -> None:
        frame = data.draw(st.integers(0, grid.shape[1] - 1))
        path = self.make_policy().path(grid[:, frame : frame + 1].clone())
        assert path.sigmas.shape == (grid.shape[0], 1) and path.input_sigmas.shape == (grid.shape[0] - 1, 1)
        assert float(path.sigmas[-1, 0]) == 0.0, "a held frame must end at sigma 0"
        compose_plan(grid, [Hold(frame, self.make_policy())], prune=False)  # validates

    @contract_settings
    @given(grid=base_grids(), sampler=st.sampled_from(["euler", "unipc"]), seed=st.integers(0, 2**16))
    def test_samplers_stay_exact(self, grid: torch.Tensor, sampler: str, seed: int) -> None:
        holds = [Hold(0, self.make_policy())]
        assert_lands_on_x0(compose_plan(grid, holds, prune=False), sampler, seed)


class SamplerContract:
    """Checks a `SamplerRule`: exact velocity lands on x0 over any valid plan. Implement `make_sampler`."""

    def make_sampler(self) -> SamplerRule:
        raise NotImplementedError

    @contract_settings
    @given(plan=plans(), seed=st.integers(0, 2**16))
    def test_lands_on_x0(self, plan: Plan, seed: int) -> None:
        assert_lands_on_x0(plan, self.make_sampler(), seed)


class PartialBackboneContract:
    """Checks a `PartialBackbone` (``velocity_partial``). Implement `make_backbone` and `make_inputs`.

    ``atol`` bounds partial against full outputs (0: bit-equal; a DiT whose kernels round differently with
    fewer query tokens sets the bound its dtype justifies).
    """

    atol = 0.0

    def make_backbone(self) -> Any:
        raise NotImplementedError

    def make_inputs(self) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """``(latents [B, C, F, H, W] with F >= 3, sigmas [B, F] float64, context)``."""
        raise NotImplementedError

    def _close(self, got: torch.Tensor, want: torch.Tensor, what: str) -> None:
        assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
        error = float((got.double() - want.double()).abs().max()) if got.numel() else 0.0
        assert error <= self.atol, f"{what}: differs from the full call by {error:.3g} (allowed {self.atol})"

    def test_declares_the_capability(self) -> None:
        assert supports_partial(self.make_backbone())

    def test_full_refresh_equals_velocity(self) -> None:
        backbone = self.make_backbone()
        latents, sigmas, context = self.make_inputs()
        everything = torch.ones(latents.shape[2], dtype=torch.bool)
        with torch.no_grad():
            full = backbone.velocity(latents, sigmas, context)
            out, memory = backbone.velocity_partial(latents, sigmas, context, compute=everything, memory=None)
        assert memory is not None
        self._close(out, full, "velocity_partial(compute=all, memory=None)")

    def test_partial_equals_full_when_nothing_changed(self) -> None:
        backbone = self.make_backbone()
        latents, sigmas, context = self.make_inputs()
        frames = latents.shape[2]
        everything = torch.ones(frames, dtype=torch.bool)
        with torch.no_grad():
            full, memory = backbone.velocity_partial(latents, sigmas, context, compute=everything, memory=None)
            for compute in (torch.arange(frames) % 2 == 0, torch.arange(frames) == frames - 1):
                out, _ = backbone.velocity_partial(latents, sigmas, context, compute=compute, memory=memory)
                self._close(out, full[:, :, compute], f"velocity_partial(compute={compute.tolist()})")

    def test_memory_none_needs_every_frame(self) -> None:
        backbone = self.make_backbone()
        latents, sigmas, context = self.make_inputs()
        compute = torch.zeros(latents.shape[2], dtype=torch.bool)
        compute[0] = True
        try:
            backbone.velocity_partial(latents, sigmas, context, compute=compute, memory=None)
        except InputError as error:
            assert "\n" not in str(error), "the error must be one line"
        else:
            raise AssertionError("memory=None with compute not all True must raise InputError")
