"""Euler and UniPC with all frames on one sequence reproduce the official trajectories (sampler fixture)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pusa_fw.backbone import Backbone
from pusa_fw.flow import frame_view
from pusa_fw.sampling import sample
from pusa_fw.task import compose_plan
from pusa_fw_schedules.grids import ShiftedGrid


class FixtureToy(Backbone):
    """The fixture's toy `v = 0.3 x + a c + 0.1 tanh(x)` with `a = float32(t / 1000)`.

    `t` is what the official network received at the k-th call: Wan's int64 timesteps (UniPC) or
    1000 * sigma (Euler). Test code only: the real samplers never look timesteps up.
    """

    def __init__(self, timesteps: torch.Tensor, c: torch.Tensor) -> None:
        self.timesteps, self.c, self.calls = timesteps, c, 0
        self.seen_sigmas: list[torch.Tensor] = []

    def velocity(self, latents: torch.Tensor, sigmas: torch.Tensor, context: object) -> torch.Tensor:
        t = self.timesteps[self.calls]
        self.calls += 1
        self.seen_sigmas.append(sigmas.clone())
        a = torch.tensor(t.to(torch.float64).item() / 1000.0, dtype=torch.float64).to(torch.float32)
        return 0.3 * latents + a * self.c + 0.1 * torch.tanh(latents)


@pytest.fixture(scope="module")
def reference(fixtures_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(fixtures_dir / "sampler" / "sampler.safetensors")


@pytest.mark.parametrize(("steps", "shift"), [(50, 5.0), (40, 3.0), (10, 5.0)])
def test_unipc_grid_matches_wan(reference: dict[str, torch.Tensor], steps: int, shift: float) -> None:
    grid = ShiftedGrid(shift=shift, sigma_max=0.999).grid(3, steps)
    expected = reference[f"unipc_n{steps}_shift{shift:g}.sigmas"]
    error = float((grid[:, 0] - expected).abs().max())
    assert error <= 1e-7, f"UniPC grid off by {error:.3g}"
    assert torch.equal(grid[:, 0], grid[:, 2])


def test_euler_grid_matches_pusa(reference: dict[str, torch.Tensor]) -> None:
    grid = ShiftedGrid(shift=5.0).grid(3, 10)
    error = float((grid[:, 0] - reference["euler_n10_shift5.sigmas"]).abs().max())
    assert error <= 1e-7, f"Pusa grid off by {error:.3g}"


def _run(reference: dict[str, torch.Tensor], key: str, sampler: str, sigma_max: float, steps: int, shift: float):
    x_t = reference["x_T"]
    grid = ShiftedGrid(shift=shift, sigma_max=sigma_max).grid(x_t.shape[2], steps)
    grid[:, :] = reference[f"{key}.sigmas"].unsqueeze(1)  # the official fp32 grid, bit for bit
    plan = compose_plan(grid)
    toy = FixtureToy(reference[f"{key}.timesteps"], reference["c"])
    trajectory = [x_t.clone()]
    out = sample(toy, plan, x_t.clone(), sampler=sampler,
                 callback=lambda info: trajectory.append(info.latents.clone()))
    return out, torch.stack(trajectory), toy


@pytest.mark.parametrize("steps", [10, 50])
def test_unipc_whole_run_matches_wan(reference: dict[str, torch.Tensor], steps: int) -> None:
    key = f"unipc_n{steps}_shift5"
    out, trajectory, toy = _run(reference, key, "unipc", 0.999, steps, 5.0)
    expected = reference[f"{key}.traj"]
    assert toy.calls == steps
    per_step = (trajectory - expected).flatten(1).abs().max(dim=1).values
    error = float((out - expected[-1]).abs().max())
    assert error <= 5e-6, f"UniPC {steps}-step final sample off by {error:.3g}; per step {per_step.tolist()}"
    assert float(per_step.max()) <= 5e-6


def test_euler_whole_run_matches_pusa(reference: dict[str, torch.Tensor]) -> None:
    out, trajectory, toy = _run(reference, "euler_n10_shift5", "euler", 1.0, 10, 5.0)
    expected = reference["euler_n10_shift5.traj"]
    error = float((trajectory - expected).abs().max())
    assert error <= 5e-6, f"Euler trajectory off by {error:.3g}"
    for k, sigmas in enumerate(toy.seen_sigmas):
        assert torch.equal(sigmas, reference["euler_n10_shift5.sigmas"][k].expand_as(sigmas))


def test_euler_one_step_given_history(reference: dict[str, torch.Tensor]) -> None:
    traj, velocity = reference["euler_n10_shift5.traj"], reference["euler_n10_shift5.velocity"]
    sigmas = reference["euler_n10_shift5.sigmas"]
    for k in range(10):
        step = frame_view((sigmas[k + 1] - sigmas[k]).expand(traj.shape[3]))
        error = float((traj[k] + step * velocity[k] - traj[k + 1]).abs().max())
        assert error <= 1e-6, f"Euler step {k} off by {error:.3g}"
