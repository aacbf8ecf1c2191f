"""The Pusa Sampler inside ComfyUI's sampler protocol, and the memory it asks ComfyUI to reserve."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

import pusa_fw

from .conftest import TEXT_DIM, conditioning

SHAPE = (1, 16, 3, 2, 2)  # 9 pixel frames of 16x16
DIM = 32  # the tiny DiT's width (conftest)


def _spec(task: str, num_frames: int = 9, **params: Any) -> Any:
    from pusa_fw_comfy.plan_spec import compile_plan

    return compile_plan(pusa_fw.get_task(task, **params), num_frames, 4, 5.0)


def _texts() -> tuple[list, list]:
    generator = torch.Generator().manual_seed(11)
    return (conditioning(torch.randn(1, 6, TEXT_DIM, generator=generator)),
            conditioning(torch.randn(1, 6, TEXT_DIM, generator=generator)))


def _run(model: Any, spec: Any, cfg: float = 3.0, history: float = 1.0, shape: tuple = SHAPE) -> torch.Tensor:
    from pusa_fw_comfy.nodes import PusaSampler

    positive, negative = _texts()
    return PusaSampler.execute(model, positive, negative, spec, {"samples": torch.zeros(shape)}, 0, "euler", cfg,
                               history).args[0]["samples"]


def _reserved() -> tuple[int, int | None]:
    import comfy.model_management

    (_, memory), = comfy.model_management.loaded
    return memory, comfy.model_management.minimums[0]


def _estimate(shape: tuple[int, ...]) -> int:
    return int(torch.Size(shape).numel()) * 4 * 64  # the stand-in's memory_required


@pytest.mark.parametrize(("task", "cfg", "history", "shape", "modulation"), [
    # i2v with text guidance: both branches batched, frame 0 held -> per-frame t: 3 x B x tokens x dim x 4 B.
    ("i2v", 3.0, 1.0, (2, 16, 3, 2, 2), 3 * 2 * 3 * DIM * 4),
    # t2v: every frame at one sigma -> a scalar t, no per-token modulation.
    ("t2v", 3.0, 1.0, (2, 16, 3, 2, 2), 0),
    # history guidance without text guidance: its branch is a separate batch-1 forward.
    ("i2v", 1.0, 2.0, (1, 16, 3, 2, 2), 3 * 1 * 3 * DIM * 4),
])
def test_the_load_is_sized_for_the_largest_forward(model: Any, task: str, cfg: float, history: float,
                                                   shape: tuple, modulation: int) -> None:
    _run(model, _spec(task), cfg, history)
    assert _reserved() == (_estimate(shape) + modulation, _estimate(shape) + modulation)


def test_a_rolling_plan_is_sized_for_one_window(model: Any) -> None:
    spec = _spec("rolling", num_frames=17, window=9, overlap=5)
    assert spec.num_latent_frames == 5
    _run(model, spec, 1.0, 1.0, shape=(1, 16, 5, 2, 2))
    window = (1, 16, 3, 2, 2)  # 9 pixel frames = 3 latent frames, not the 5 of the timeline
    assert _reserved() == (_estimate(window) + 3 * 3 * DIM * 4,) * 2


def test_modulation_memory_at_wan_14b_480p() -> None:
    """The review's number: 3 copies of [2, 32760, 5120] in bf16 = 2.01 GB at 81 frames of 480x832."""
    from pusa_fw_comfy.comfy_bridge import modulation_memory

    network = SimpleNamespace(patch_embedding=SimpleNamespace(weight=torch.empty(5120, 0, 1, 2, 2)),
                              patch_size=(1, 2, 2))
    base = SimpleNamespace(diffusion_model=network, manual_cast_dtype=torch.bfloat16,
                           get_dtype=lambda: torch.float8_e4m3fn)
    assert modulation_memory(SimpleNamespace(model=base), (2, 16, 21, 60, 104)) == 3 * 2 * 32760 * 5120 * 2


def test_the_run_follows_comfyuis_sampler_protocol(model: Any) -> None:
    import comfy.model_patcher
    import comfy.patcher_extension
    import comfy.samplers
    import comfy.utils
    import latent_preview

    seen: list[dict[str, Any]] = []

    def recorder(executor: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        options = kwargs.get("transformer_options") or args[-1]
        seen.append({key: options.get(key) for key in ("sample_sigmas", "cond_or_uncond", "uuids", "sigmas")})
        return executor(*args, **kwargs)

    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "recorder", recorder)
    spec = _spec("i2v")
    _run(model, spec)
    steps = spec.plan.num_steps
    assert comfy.model_patcher.events == ["pre_run", *["prepare_state"] * steps, "cleanup"]
    assert comfy.samplers.casts == [(torch.device("cpu"), torch.float32), (torch.device("cpu"), None)]
    assert model.model.current_patcher is None
    expected_sigmas = spec.plan.sigmas.amax(dim=1).to(torch.float32)
    assert len(seen) == steps
    for options in seen:
        assert torch.equal(options["sample_sigmas"], expected_sigmas)
        assert options["cond_or_uncond"] == [0, 1]
    assert len({tuple(options["uuids"]) for options in seen}) == 1 and len(set(seen[0]["uuids"])) == 2
    assert latent_preview.previews == [(step + 1, steps, SHAPE) for step in range(steps)]
    assert comfy.utils.bars[-1].current == steps == comfy.utils.bars[-1].total


def test_cleanup_runs_when_the_user_cancels(model: Any) -> None:
    import comfy.model_management
    import comfy.model_patcher

    comfy.model_management.interrupt_after_steps = 2
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        _run(model, _spec("t2v"))
    assert comfy.model_patcher.events[0] == "pre_run" and comfy.model_patcher.events[-1] == "cleanup"


def test_a_caching_wrapper_that_skips_the_model_is_honoured(model: Any) -> None:
    """A wrapper on the MODEL that answers without calling the model (a cache) still feeds the sampler."""
    import comfy.patcher_extension

    calls = {"model": 0}

    def cache(executor: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls["model"] += 1
        return torch.zeros_like(x)  # "cached" velocity: nothing moves

    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "cache", cache)
    noise_only = _run(model, _spec("t2v"), cfg=1.0)
    assert calls["model"] == 4
    from pusa_fw.seeding import draw_noise, make_generator

    fmt = model.model.latent_format
    torch.testing.assert_close(fmt.process_in(noise_only), draw_noise(SHAPE, make_generator(0)))


def test_conditioning_hooks_are_refused_in_one_line(model: Any) -> None:
    from pusa_fw_comfy.errors import PusaNodeError
    from pusa_fw_comfy.nodes import PusaSampler

    positive, negative = _texts()
    hooked = [[positive[0][0], {"hooks": object()}]]
    with pytest.raises(PusaNodeError, match="positive carries conditioning hooks"):
        PusaSampler.execute(model, hooked, negative, _spec("t2v"), {"samples": torch.zeros(SHAPE)}, 0, "euler",
                            3.0, 1.0)
