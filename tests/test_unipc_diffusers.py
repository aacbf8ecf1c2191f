"""On synchronous grids our per-frame UniPC equals diffusers' UniPCMultistepScheduler (flow sigmas)."""

from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch

from pusa_fw.sampling import sample
from pusa_fw.task import compose_plan
from pusa_fw.testing.fakes import ToyVelocityBackbone
from pusa_fw_schedules.grids import ShiftedGrid


def _diffusers_run(x: torch.Tensor, c: torch.Tensor, steps: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    scheduler = diffusers.UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift,
        solver_order=2, solver_type="bh2", predict_x0=True, lower_order_final=True,
    )
    scheduler.set_timesteps(sigmas=np.linspace(0.999, 0, steps + 1)[:-1])
    toy = ToyVelocityBackbone()
    for k, t in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[k].to(torch.float32).expand(x.shape[2]).unsqueeze(0)
        x = scheduler.step(toy.velocity(x, sigma, c), t, x, return_dict=False)[0]
    return x, scheduler.sigmas.to(torch.float32)


@pytest.mark.parametrize(("steps", "shift"), [(10, 5.0), (25, 3.0), (50, 5.0)])
def test_unipc_matches_diffusers(steps: int, shift: float) -> None:
    generator = torch.Generator().manual_seed(steps)
    x_t = torch.randn(1, 4, 3, 4, 4, generator=generator)
    c = torch.randn(1, 4, 3, 4, 4, generator=generator)
    expected, sigmas = _diffusers_run(x_t.clone(), c, steps, shift)
    grid = ShiftedGrid(shift=shift, sigma_max=0.999).grid(3, steps)
    assert float((grid[:, 0] - sigmas).abs().max()) <= 1e-6  # our own grid, not diffusers' copied in
    ours = sample(ToyVelocityBackbone(), compose_plan(grid), x_t.clone(), sampler="unipc", context=c)
    error = float((ours - expected).abs().max())
    assert error <= 1e-5, f"UniPC vs diffusers ({steps} steps, shift {shift}): {error:.3g}"
