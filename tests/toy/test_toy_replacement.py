"""Replacement conditioning is a plain policy: valid in plans, exact with the exact-velocity backbone, and
the held frame is shown at the generated frames' level with fresh noise in every step."""

from __future__ import annotations

import torch

from pusa_fw.registry_lookup import lookup
from pusa_fw.sampling import sample
from pusa_fw.task import Hold, compose_plan
from pusa_fw.testing.contracts import PolicyContract
from pusa_fw.testing.fakes import ExactVelocityBackbone, FrameTargets
from pusa_fw_toy.policies import Replacement


class TestReplacementContract(PolicyContract):
    def make_policy(self) -> Replacement:
        return Replacement()


def test_registered_by_name_and_shapes_the_plan() -> None:
    assert lookup("conditioning_policies", "replace") is Replacement
    task = lookup("tasks", "i2v")(policy="replace")
    plan = task.plan(17, 6, 2.0)
    free = plan.sigmas[:, 1]
    assert bool((plan.sigmas[:, 0] == 0).all())
    assert torch.equal(plan.input_sigmas[:, 0], free[:-1])


class _Recorder(ExactVelocityBackbone):
    def __init__(self) -> None:
        super().__init__()
        self.shown: list[tuple[torch.Tensor, torch.Tensor]] = []

    def velocity(self, latents, sigmas, context):
        self.shown.append((latents[:, :, 0].clone(), sigmas[:, 0].clone()))
        return super().velocity(latents, sigmas, context)


def test_held_frame_is_a_fresh_noisy_copy_each_step_and_exact_at_the_end() -> None:
    grid = torch.linspace(1, 0, 6).unsqueeze(1).repeat(1, 3)
    plan = compose_plan(grid, [Hold(0, Replacement())])
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 4, 3, 2, 2, generator=generator)
    noise = torch.randn(1, 4, 3, 2, 2, generator=generator)
    backbone = _Recorder()
    out = sample(backbone, plan, noise, source=x0, context=FrameTargets(x0))
    assert torch.equal(out[:, :, 0], x0[:, :, 0])
    assert torch.allclose(out, x0, atol=2e-5)
    levels = [float(sigma) for _, sigma in backbone.shown]
    assert levels == [float(value) for value in grid[:-1, 0]]
    implied_noise = [(shown - (1 - sigma) * x0[:, :, 0]) / sigma for shown, sigma in backbone.shown[1:]]
    assert all(not torch.allclose(a, b) for a, b in zip(implied_noise, implied_noise[1:]))
