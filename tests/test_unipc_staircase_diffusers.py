"""Per-frame UniPC on a staircase plan equals diffusers' scalar UniPC run on each frame's own sigma column.

With a backbone that acts per frame (`ToyVelocityBackbone`: frame f's velocity depends only on frame f's
latent, sigma and context), every frame of a staircase is an independent scalar ODE solve over its own
sigma sequence (its column with the waiting rows removed). Diffusers' `UniPCMultistepScheduler` (bh2,
order 2, x0-prediction, lower order at the end) run on that column alone must give the same frame: this
checks the per-frame predictor/corrector coefficients and orders, which the exact-velocity test cannot
(any consistent solver lands on x0 with the exact velocity).
"""

from __future__ import annotations

import diffusers
import pytest
import torch

from pusa_fw.sampling import sample
from pusa_fw.task import compose_plan
from pusa_fw.testing.fakes import ToyVelocityBackbone
from pusa_fw_schedules.grids import PyramidGrid, TrapezoidGrid

TOLERANCE = 1e-5  # fp32 trajectories; the synchronous comparison (test_unipc_diffusers) uses the same bound


def _own_levels(column: torch.Tensor) -> torch.Tensor:
    """A frame's sigma sequence: its column without the rows where it waits (repeated levels)."""
    keep = torch.ones_like(column, dtype=torch.bool)
    keep[1:] = column[1:] != column[:-1]
    return column[keep]


def _scalar_unipc(x: torch.Tensor, context: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Diffusers' scalar UniPC over `levels` (descending, last 0), no shift applied on top."""
    scheduler = diffusers.UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=1.0,
        solver_order=2, solver_type="bh2", predict_x0=True, lower_order_final=True,
    )
    scheduler.set_timesteps(sigmas=levels[:-1].double().numpy())
    assert torch.equal(scheduler.sigmas, levels.to(torch.float32))  # the column itself, unchanged
    toy = ToyVelocityBackbone()
    for index, timestep in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[index].reshape(1, 1)
        x = scheduler.step(toy.velocity(x, sigma, context), timestep, x, return_dict=False)[0]
    return x


@pytest.mark.parametrize(
    "schedule",
    [
        PyramidGrid(shift=5.0, sigma_max=0.999, ar_step=2),
        PyramidGrid(shift=3.0, sigma_max=0.999, ar_step=3, causal_block_size=2),
        TrapezoidGrid(shift=5.0, sigma_max=0.999, ar_step=4),
    ],
    ids=["pyramid-ar2", "pyramid-ar3-block2", "trapezoid-ar4"],
)
@pytest.mark.parametrize("num_steps", [8, 20])
def test_per_frame_unipc_equals_scalar_unipc_on_each_column(schedule, num_steps: int) -> None:
    num_frames = 6
    plan = compose_plan(schedule.grid(num_frames, num_steps))
    columns = [_own_levels(plan.sigmas[:, frame]) for frame in range(num_frames)]
    starts = {int((plan.sigmas[:, frame] < plan.sigmas[0, frame]).nonzero()[0]) for frame in range(num_frames)}
    assert len(starts) > 1, "the plan must be a real staircase (frames start moving at different steps)"

    generator = torch.Generator().manual_seed(num_steps)
    noise = torch.randn(1, 4, num_frames, 4, 4, generator=generator)
    context = torch.randn(1, 4, num_frames, 4, 4, generator=generator)
    ours = sample(ToyVelocityBackbone(), plan, noise.clone(), sampler="unipc", context=context)

    errors = []
    for frame, levels in enumerate(columns):
        part = slice(frame, frame + 1)
        expected = _scalar_unipc(noise[:, :, part].clone(), context[:, :, part], levels)
        errors.append(float((ours[:, :, part] - expected).abs().max()))
    assert max(errors) <= TOLERANCE, f"per-frame UniPC vs scalar UniPC, max-abs error per frame: {errors}"
    assert float((ours - noise).abs().max()) > 0.1  # the frames really moved
