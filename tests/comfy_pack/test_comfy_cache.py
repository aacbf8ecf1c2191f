"""The Pusa Sampler's cache widgets: teacache runs and equals pusa-fw's loop with the same cache; framecache on
ComfyUI's MODEL (no partial computation) and bad params are one-line node errors; the widgets are listed."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import pusa_fw
from pusa_fw.api import get_cache
from pusa_fw.caches import WorkStats
from pusa_fw.seeding import draw_noise, make_generator

from .conftest import TEXT_DIM, conditioning

SHAPE = (1, 16, 3, 2, 2)


def _spec(task: str = "i2v") -> Any:
    from pusa_fw_comfy.plan_spec import compile_plan

    return compile_plan(pusa_fw.get_task(task), 9, 6, 5.0)


def _texts() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(11)
    return torch.randn(1, 6, TEXT_DIM, generator=generator), torch.randn(1, 6, TEXT_DIM, generator=generator)


def test_the_sampler_node_lists_the_caches_as_optional_widgets() -> None:
    from pusa_fw_comfy.nodes import PusaSampler

    inputs = {item.id: item for item in PusaSampler.define_schema().inputs}
    assert inputs["cache"].optional and inputs["cache_params"].optional
    assert {"none", "teacache", "framecache"} <= set(inputs["cache"].options["options"])


def test_teacache_on_the_node_equals_the_loop_with_the_same_cache(tiny_dit: Any, model: Any) -> None:
    from pusa_fw_comfy.nodes import PusaSampler

    spec = _spec("i2v")
    given = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    positive, negative = _texts()
    params = '{"threshold": 1000000000.0}'  # computes only the first and the last step
    output = PusaSampler.execute(model, conditioning(positive), conditioning(negative), spec, {"samples": given},
                                 42, "euler", 3.0, 1.0, None, "teacache", params).args[0]["samples"]
    plain = PusaSampler.execute(model, conditioning(positive), conditioning(negative), spec, {"samples": given},
                                42, "euler", 3.0, 1.0).args[0]["samples"]
    latent_format = model.model.latent_format
    generator = make_generator(42)
    work = WorkStats()
    with torch.no_grad():
        reference = pusa_fw.sample(
            tiny_dit, spec.plan, draw_noise(SHAPE, generator), sampler="euler",
            source=latent_format.process_in(given), context=positive, negative_context=negative,
            guidance=pusa_fw.Guidance(cfg_scale=3.0), generator=generator,
            cache=get_cache("teacache", threshold=1e9), work=work)
    assert work.calls == 4 and work.calls_reference == 12  # 2 of 6 steps, both CFG branches
    assert (latent_format.process_in(output) - reference).abs().max().item() < 1e-4
    assert not torch.allclose(output, plain)


@pytest.mark.parametrize(("cache", "params", "fragment"), [
    ("framecache", "{}", "ComfyWanBackbone has none: use --cache teacache"),
    ("teacache", "{threshold: 1}", "is not a JSON object"),
    ("teacache", '{"treshold": 1}', "treshold"),
])
def test_refusals_are_one_line_node_errors(model: Any, cache: str, params: str, fragment: str) -> None:
    from pusa_fw_comfy.nodes import PusaSampler

    positive, negative = _texts()
    with pytest.raises(Exception) as error:
        PusaSampler.execute(model, conditioning(positive), conditioning(negative), _spec("t2v"),
                            {"samples": torch.zeros(SHAPE)}, 0, "euler", 3.0, 1.0, None, cache, params)
    assert fragment in str(error.value) and "\n" not in str(error.value)
