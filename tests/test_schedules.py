"""Built-in schedules, grid operators and policies: their shapes, their semantics, their contracts."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from pydantic import ValidationError

from pusa_fw.errors import PlanError
from pusa_fw.grid_ops import concat_frames, overlay_min, resample_grid
from pusa_fw.schedule import check_grid, shifted_sigmas
from pusa_fw.testing.contracts import PolicyContract, ScheduleContract
from pusa_fw.testing.strategies import base_grids
from pusa_fw_schedules import policies
from pusa_fw_schedules.combinators import ConcatSchedule, OverlaySchedule, ResampledSchedule
from pusa_fw_schedules.grids import PyramidGrid, ShiftedGrid, TrapezoidGrid


def template_index(grid: torch.Tensor, sequence: torch.Tensor) -> list[list[int]]:
    """Rows of SkyReels-style indices: 0 = untouched, k = evaluating the k-th level, N+1 = done."""
    steps = sequence.shape[0] - 1
    rows = []
    for r in range(grid.shape[0] - 1):
        row = []
        for f in range(grid.shape[1]):
            if grid[r, f] == 0:
                row.append(steps + 1)
            elif grid[r + 1, f] == grid[r, f]:
                row.append(0)
            else:
                row.append(int((sequence == grid[r, f]).nonzero()[0]) + 1)
        rows.append(row)
    return rows


def test_pyramid_reproduces_skyreels_step_matrix() -> None:
    # SkyReels-V2 example (schedule_anchors.md §3): N=4, ar_step=2, 3 generated blocks after a prefix.
    grid = PyramidGrid(ar_step=2, causal_block_size=1).grid(3, 4)
    sequence = shifted_sigmas(4)
    rows = template_index(grid, sequence)
    assert rows == [[1, 0, 0], [2, 0, 0], [3, 1, 0], [4, 2, 0], [5, 3, 1], [5, 4, 2], [5, 5, 3], [5, 5, 4]]
    assert grid.shape[0] - 1 == 4 + (3 - 1) * 2


def test_pyramid_keeps_a_short_last_block() -> None:
    grid = PyramidGrid(ar_step=1, causal_block_size=4).grid(10, 3)
    assert grid.shape == (3 + 2 + 1, 10)
    assert torch.equal(grid[:, 8], grid[:, 9]) and not torch.equal(grid[:, 7], grid[:, 8])
    assert ((grid[1:] < grid[:-1]).sum(dim=0) == 3).all()


def test_trapezoid_finishes_edges_first() -> None:
    grid = TrapezoidGrid(ar_step=1).grid(7, 4)
    finish = [int((grid[:, f] == 0).nonzero()[0]) for f in range(7)]
    assert finish == [4, 5, 6, 7, 6, 5, 4]


def test_shifted_grid_is_synchronous_and_shifted() -> None:
    grid = ShiftedGrid(shift=3.0).grid(4, 6)
    assert (grid == grid[:, :1]).all()
    u = torch.linspace(1, 0, 7, dtype=torch.float64)
    torch.testing.assert_close(grid[:, 0], 3 * u / (1 + 2 * u), atol=1e-15, rtol=0)  # float64, never rounded


def test_schedule_params_are_validated() -> None:
    with pytest.raises(ValidationError, match="shift"):
        ShiftedGrid(shift=0)
    with pytest.raises(ValidationError, match="ar_step"):
        PyramidGrid(ar_step=-1)
    with pytest.raises(ValidationError, match="bogus"):
        ShiftedGrid(bogus=1)
    with pytest.raises(PlanError, match="num_steps"):
        ShiftedGrid().grid(3, 0)


@given(base_grids(), base_grids())
def test_grid_operators_keep_grids_valid(first: torch.Tensor, second: torch.Tensor) -> None:
    joined = concat_frames([first, second])
    assert joined.shape == (max(first.shape[0], second.shape[0]), first.shape[1] + second.shape[1])
    check_grid(joined)
    check_grid(concat_frames([first, second], align="end"))
    resampled = resample_grid(first, 7)
    assert resampled.shape == (8, first.shape[1])
    assert torch.equal(resampled[0], first[0]) and (resampled[-1] == 0).all()
    if first.shape[1] == second.shape[1]:
        overlaid = overlay_min(first, second)
        assert (overlaid <= first).all()
        check_grid(overlaid)


def test_combinators() -> None:
    concat = ConcatSchedule(parts=[ShiftedGrid(), PyramidGrid(ar_step=1)], frames=[2])
    grid = concat.grid(5, 4)
    assert grid.shape == (4 + 2 + 1, 5) and torch.equal(grid[:5, 0], ShiftedGrid().grid(1, 4)[:, 0])
    with pytest.raises(ValidationError, match="frames needs 1"):
        ConcatSchedule(parts=[ShiftedGrid(), ShiftedGrid()])
    assert ResampledSchedule(inner=PyramidGrid(ar_step=2), num_steps=5).grid(4, 4).shape == (6, 4)
    assert ResampledSchedule(inner="pyramid", steps=5) == ResampledSchedule(inner=PyramidGrid(), num_steps=5)
    over = OverlaySchedule(first=ShiftedGrid(), second=TrapezoidGrid(ar_step=1)).grid(5, 4)
    assert (over <= ShiftedGrid().grid(5, 4)).all()


def test_policies_shape_paths_as_documented() -> None:
    base = ShiftedGrid().grid(1, 6)
    assert (policies.Clean().path(base).sigmas == 0).all()
    multiplied = policies.NoiseMultiplier(multiplier=0.3).path(base)
    assert torch.equal(multiplied.sigmas, base * 0.3)
    renoise = policies.FixedRenoise(level=0.02).path(base)
    assert (renoise.sigmas == 0).all() and (renoise.input_sigmas == 0.02).all()
    late = policies.LateRelease(strength=0.6).path(base)
    assert torch.equal(late.sigmas, torch.clamp(base, max=0.4))
    release = policies.HoldThenRelease(release_steps=2).path(base)
    assert (release.sigmas[:4] == 0).all() and torch.equal(release.sigmas[4:], base[4:])
    ramp = policies.RampStrength(start=1.0, end=0.0).path(base).sigmas[:, 0]
    assert ramp[0] == 0 and ramp[-1] == 0 and (ramp[1:-1] > 0).all()
    assert policies.NoiseMultiplier.from_strength(0.8).multiplier == pytest.approx(0.2)
    assert policies.NoiseMultiplier.from_strength(0.8, multiplier=0.4).multiplier == 0.4  # params win
    assert policies.HoldThenRelease.from_strength(0.5, release_steps=3) == policies.HoldThenRelease(
        strength=0.5, release_steps=3
    )
    assert policies.Clean.from_strength(0.3) == policies.Clean()


class TestShiftedContract(ScheduleContract):
    def make_schedule(self):
        return ShiftedGrid(shift=3.0)


class TestPyramidContract(ScheduleContract):
    def make_schedule(self):
        return PyramidGrid(ar_step=2, causal_block_size=2)


class TestTrapezoidContract(ScheduleContract):
    def make_schedule(self):
        return TrapezoidGrid(ar_step=1)


class TestConcatContract(ScheduleContract):
    min_frames = 2

    def make_schedule(self):
        return ConcatSchedule(parts=[PyramidGrid(), TrapezoidGrid()], frames=[1], align="end")


@pytest.mark.parametrize(
    "policy",
    [
        policies.Clean(), policies.NoiseMultiplier(multiplier=0.4), policies.FixedRenoise(level=0.1),
        policies.LateRelease(strength=0.5), policies.HoldThenRelease(release_steps=1),
        policies.RampStrength(start=0.9, end=0.2),
    ],
    ids=lambda p: p.name,
)
class TestBuiltinPolicyContracts(PolicyContract):  # noqa: D101
    @pytest.fixture(autouse=True)
    def _policy(self, policy):
        self._current = policy

    def make_policy(self):
        return self._current
