"""Pusa Sampler and the `Backbone` adapter around a ComfyUI-layout Wan model (stand-in ComfyUI)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import pusa_fw
from pusa_fw.seeding import draw_noise, make_generator

from .conftest import TEXT_DIM, comfy_model, conditioning

NUM_FRAMES, HEIGHT, WIDTH = 9, 16, 16  # 3 latent frames of 2x2 latents
SHAPE = (1, 16, 3, 2, 2)


def _texts() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(11)
    return torch.randn(1, 6, TEXT_DIM, generator=generator), torch.randn(1, 6, TEXT_DIM, generator=generator)


def _spec(task: str = "i2v", num_frames: int = NUM_FRAMES, **params: Any) -> Any:
    from pusa_fw_comfy.plan_spec import compile_plan

    return compile_plan(pusa_fw.get_task(task, **params), num_frames, 4, 5.0)


def test_backbone_matches_wandit_on_per_frame_sigmas(tiny_dit: Any, model: Any) -> None:
    from pusa_fw_comfy.backbone import ComfyWanBackbone

    backbone = ComfyWanBackbone(model)
    latents = torch.randn(2, 16, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    sigmas = torch.tensor([[0.0, 0.9, 0.9], [0.3, 0.55, 1.0]], dtype=torch.float64)
    context = torch.randn(2, 6, TEXT_DIM, generator=torch.Generator().manual_seed(1))
    ours = tiny_dit.velocity(latents, sigmas, context)
    theirs = backbone.velocity(latents, sigmas, context)
    assert theirs.shape == ours.shape and theirs.dtype == torch.float32
    assert (theirs - ours).abs().max().item() < 1e-5 * max(1.0, ours.abs().max().item())
    # A frame's sigma changes only through the per-frame timesteps: frame 0 at 0 differs from 0.9.
    other = backbone.velocity(latents[:1], torch.tensor([[0.9, 0.9, 0.9]], dtype=torch.float64), context[:1])
    assert not torch.allclose(other[:, :, 0], theirs[:1, :, 0])


def test_batched_guidance_branches_equal_separate_calls(model: Any) -> None:
    from pusa_fw_comfy.backbone import ComfyWanBackbone

    backbone = ComfyWanBackbone(model)
    latents = torch.randn(1, 16, 3, 2, 2, generator=torch.Generator().manual_seed(2))
    sigmas = torch.tensor([[0.2, 0.7, 0.7]], dtype=torch.float64)
    positive, negative = _texts()
    batched = backbone.velocities(latents, sigmas, [positive, negative])
    separate = [backbone.velocity(latents, sigmas, text) for text in (positive, negative)]
    for one, other in zip(batched, separate):
        torch.testing.assert_close(one, other, rtol=1e-5, atol=1e-6)


def test_the_users_model_is_not_patched(model: Any) -> None:
    from pusa_fw_comfy.backbone import ComfyWanBackbone

    backbone = ComfyWanBackbone(model)
    assert model.wrappers == {}
    assert backbone.model is not model and backbone.model.wrappers


@pytest.mark.parametrize("sampler", ["euler", "unipc"])
def test_sampler_node_equals_pusa_fw_sample_with_wandit(tiny_dit: Any, model: Any, sampler: str) -> None:
    """The node's latents equal pusa-fw's own loop on our WanDiT with the same weights, plan, seed, sampler."""
    import comfy.utils

    from pusa_fw_comfy.nodes import PusaSampler

    spec = _spec("i2v")
    given_raw = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    positive, negative = _texts()
    output = PusaSampler.execute(model, conditioning(positive), conditioning(negative), spec,
                                 {"samples": given_raw}, 42, sampler, 3.0, 1.0).args[0]["samples"]
    backbone_format = model.model.latent_format
    generator = make_generator(42)
    with torch.no_grad():
        reference = pusa_fw.sample(
            tiny_dit, spec.plan, draw_noise(SHAPE, generator), sampler=sampler,
            source=backbone_format.process_in(given_raw), context=positive, negative_context=negative,
            guidance=pusa_fw.Guidance(cfg_scale=3.0), generator=generator,
        )
    ours = backbone_format.process_in(output)
    assert (ours - reference).abs().max().item() < 1e-4
    assert comfy.utils.bars[-1].current == spec.plan.num_steps == comfy.utils.bars[-1].total
    # i2v with Pusa's multiplier: the held frame stays near its source, the others moved far from noise.
    assert not torch.allclose(ours[:, :, 1:], draw_noise(SHAPE, make_generator(42))[:, :, 1:])


def test_sampler_loads_the_model_through_model_management(model: Any) -> None:
    import comfy.model_management

    from pusa_fw_comfy.nodes import PusaSampler

    positive, negative = _texts()
    PusaSampler.execute(model, conditioning(positive), conditioning(negative), _spec("t2v"),
                        {"samples": torch.zeros(SHAPE)}, 0, "euler", 3.0, 1.0)
    (loaded, memory), = comfy.model_management.loaded
    assert loaded is not model and loaded.model is model.model and memory > 0


def test_interrupt_stops_between_steps(model: Any) -> None:
    import comfy.model_management
    import comfy.utils

    from pusa_fw_comfy.nodes import PusaSampler

    comfy.model_management.interrupt_after_steps = 2
    positive, _ = _texts()
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        PusaSampler.execute(model, conditioning(positive), None, _spec("t2v"), {"samples": torch.zeros(SHAPE)},
                            0, "euler", 1.0, 1.0)
    assert comfy.utils.bars[-1].current == 2


def test_rolling_with_a_prompt_schedule_uses_each_prompt(model: Any) -> None:
    from pusa_fw_comfy.nodes import PusaPromptSchedule, PusaSampler

    spec = _spec("rolling", num_frames=17, window=9, overlap=5)
    first, later = _texts()
    schedule = PusaPromptSchedule.execute(conditioning(later), 12).args[0]
    shape = (1, 16, spec.num_latent_frames, 2, 2)
    with_schedule = PusaSampler.execute(model, conditioning(first), None, spec, {"samples": torch.zeros(shape)},
                                        1, "euler", 1.0, 1.0, schedule).args[0]["samples"]
    without = PusaSampler.execute(model, conditioning(first), None, spec, {"samples": torch.zeros(shape)},
                                  1, "euler", 1.0, 1.0).args[0]["samples"]
    assert torch.isfinite(with_schedule).all()
    # The first window's frames are conditioned on the first prompt in both runs; the last frames are not.
    torch.testing.assert_close(with_schedule[:, :, :2], without[:, :, :2])
    assert not torch.allclose(with_schedule[:, :, -1], without[:, :, -1])


def _error(call: Any) -> str:
    from pusa_fw_comfy.errors import PusaNodeError

    with pytest.raises(PusaNodeError) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message and raised.value.__cause__ is None and raised.value.__suppress_context__
    return message


def test_bad_sampler_inputs_are_one_line_node_errors(tiny_dit: Any, model: Any) -> None:
    from comfy.model_base import SD15
    from comfy.model_patcher import ModelPatcher

    from pusa_fw_comfy.nodes import PusaPromptSchedule, PusaSampler

    positive, negative = _texts()
    spec = _spec("i2v")

    def run(model_: Any = model, latent: Any = None, negative_: Any = conditioning(negative), cfg: float = 3.0,
            plan: Any = spec, schedule: Any = None, positive_: Any = conditioning(positive)) -> Any:
        latent = {"samples": torch.zeros(SHAPE)} if latent is None else latent
        return PusaSampler.execute(model_, positive_, negative_, plan, latent, 0, "euler", cfg, 1.0, schedule)

    assert "latent has 5 latent frames but the plan has 3" in _error(
        lambda: run(latent={"samples": torch.zeros(1, 16, 5, 2, 2)}))
    assert "num_frames to 17" in _error(lambda: run(latent={"samples": torch.zeros(1, 16, 5, 2, 2)}))
    assert "Wan text-to-video or TI2V-5B MODEL, got SD15" in _error(lambda: run(model_=ModelPatcher(SD15(tiny_dit))))
    assert "needs a negative CONDITIONING" in _error(lambda: run(negative_=None))
    assert "combines 2 conditionings" in _error(
        lambda: run(positive_=conditioning(positive) + conditioning(negative)))
    schedule = PusaPromptSchedule.execute(conditioning(negative), 4).args[0]
    assert "needs a task with sliding windows" in _error(lambda: run(schedule=schedule))
    assert "batch of 2" in _error(lambda: run(latent={"samples": torch.zeros(2, 16, 3, 2, 2)}))


def test_an_image_to_video_wan_model_is_refused(tiny_dit: Any) -> None:
    from pusa_fw_wan.dit.config import WanConfig
    from pusa_fw_wan.dit.model import WanDiT

    from pusa_fw_comfy.backbone import ComfyWanBackbone
    from pusa_fw_comfy.errors import PusaNodeError, node_errors

    i2v = WanDiT(WanConfig(dim=32, num_heads=2, num_layers=1, ffn_dim=64, freq_dim=32, text_dim=TEXT_DIM,
                           in_dim=36))
    with pytest.raises(PusaNodeError, match="takes 36 input channels"), node_errors("Pusa Sampler"):
        ComfyWanBackbone(comfy_model(i2v))
