"""Classifier-free guidance, history guidance, window contexts and the step callback."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pusa_fw.backbone import Backbone
from pusa_fw.context import PromptTimeline
from pusa_fw.errors import PusaError
from pusa_fw.guidance import Guidance, guided_velocity
from pusa_fw.registry_lookup import lookup
from pusa_fw.sampling import sample
from pusa_fw.testing.fakes import ExactVelocityBackbone, FrameTargets
from pusa_fw.testing.strategies import latents_for


class Recorder(Backbone):
    """Velocity = context value + mean of the latents over frames (so hidden frames matter); logs calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, torch.Tensor, torch.Tensor]] = []

    def velocity(self, latents: torch.Tensor, sigmas: torch.Tensor, context: Any) -> torch.Tensor:
        self.calls.append((context, latents.clone(), sigmas.clone()))
        mixed = latents.mean(dim=2, keepdim=True).expand_as(latents)
        return float(context) + mixed + sigmas.view(*sigmas.shape[:2], 1, 1).unsqueeze(1)


def test_branches_are_skipped_at_scale_one() -> None:
    plan = lookup("tasks", "i2v")().plan(num_frames=9, num_steps=3)
    x0, noise = latents_for(plan, 0)
    for guidance, calls in [(Guidance(), 3), (Guidance(cfg_scale=3), 6), (Guidance(history_scale=2), 6),
                            (Guidance(cfg_scale=3, history_scale=2), 9)]:
        recorder = Recorder()
        sample(recorder, plan, noise, source=x0, context=1.0, negative_context=0.0, guidance=guidance)
        assert len(recorder.calls) == calls, guidance


def test_cfg_matches_pusa_formula_and_needs_a_negative() -> None:
    recorder = Recorder()
    latents = torch.randn(1, 2, 3, 2, 2)
    sigmas = torch.tensor([[0.9, 0.5, 0.2]])
    no_context = torch.zeros(3, dtype=torch.bool)
    out = guided_velocity(recorder, latents, sigmas, 2.0, -1.0, Guidance(cfg_scale=3), no_context, torch.randn_like)
    v_pos = recorder.velocity(latents, sigmas, 2.0)
    v_neg = recorder.velocity(latents, sigmas, -1.0)
    assert torch.equal(out, v_neg + 3 * (v_pos - v_neg))
    with pytest.raises(PusaError, match="needs a negative context"):
        guided_velocity(recorder, latents, sigmas, 2.0, None, Guidance(cfg_scale=3), no_context, torch.randn_like)


def test_history_guidance_hides_context_frames_at_sigma_one() -> None:
    recorder = Recorder()
    latents = torch.randn(1, 2, 3, 2, 2)
    sigmas = torch.tensor([[0.0, 0.5, 0.7]])
    hidden = torch.tensor([True, False, False])
    noise = torch.full_like(latents, 7.0)
    out = guided_velocity(recorder, latents, sigmas, 1.0, None, Guidance(history_scale=2.5), hidden, lambda: noise)
    _, masked_latents, masked_sigmas = recorder.calls[-1]
    assert torch.equal(masked_sigmas, torch.tensor([[1.0, 0.5, 0.7]]))
    assert (masked_latents[:, :, 0] == 7.0).all() and torch.equal(masked_latents[:, :, 1:], latents[:, :, 1:])
    conditional = recorder.velocity(latents, sigmas, 1.0)
    unguided = recorder.velocity(masked_latents, masked_sigmas, 1.0)
    expected = conditional + 1.5 * (conditional - unguided)
    torch.testing.assert_close(out[:, :, 1:], expected[:, :, 1:])
    assert torch.equal(out[:, :, 0], conditional[:, :, 0])


def test_exact_backbone_stays_exact_under_both_guidances() -> None:
    plan = lookup("tasks", "keyframes")(positions=[0, 16]).plan(num_frames=17, num_steps=4)
    x0, noise = latents_for(plan, 5)
    targets = FrameTargets(x0)
    out = sample(ExactVelocityBackbone(), plan, noise, sampler="unipc", source=x0, context=targets,
                 negative_context=targets, guidance=Guidance(cfg_scale=4, history_scale=3))
    assert float((out - x0).abs().max()) < 2e-5


def test_prompt_timeline_picks_the_context_of_the_window_middle() -> None:
    plan = lookup("tasks", "rolling")(window=17, overlap=5).plan(num_frames=49, num_steps=2)
    recorder = Recorder()
    timeline = PromptTimeline(starts=[0, 8], contexts=[1.0, 2.0])
    x0, noise = latents_for(plan, 0)
    seen = []
    sample(recorder, plan, noise, context=timeline, callback=lambda info: seen.append(info.step))
    contexts = [c for c, _, _ in recorder.calls]
    assert contexts[0] == 1.0 and contexts[-1] == 2.0
    assert seen == list(range(plan.num_steps))
    with pytest.raises(PusaError, match="must begin at 0"):
        PromptTimeline(starts=[2], contexts=[1.0])


def test_sampling_is_deterministic_for_a_seed_and_checks_shapes() -> None:
    plan = lookup("tasks", "i2v")(policy="renoise", strength=0.9).plan(num_frames=9, num_steps=3)
    x0, noise = latents_for(plan, 0)
    runs = [sample(Recorder(), plan, noise, source=x0, context=1.0,
                   generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    with pytest.raises(PusaError, match="pass their latents as `source`"):
        sample(Recorder(), plan, noise, context=1.0)
    with pytest.raises(PusaError, match="N=3 latent frames"):
        sample(Recorder(), plan, noise[:, :, :2], source=x0, context=1.0)
