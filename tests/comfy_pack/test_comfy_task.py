"""Pusa Task node and the pack's node schemas (stand-in ComfyUI)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import torch

import pusa_fw
from pusa_fw.testing.plugin import plugin_manager, register_plugin  # noqa: F401 - pytest fixtures

DEFAULTS = {"strengths": "", "positions": "", "params": "{}", "schedule": "(task default)",
            "schedule_params": "{}", "policy": "(task default)", "policy_params": "{}"}


def _run(task: str, num_frames: int = 17, num_steps: int = 4, shift: float = 5.0, **widgets: Any) -> Any:
    from pusa_fw_comfy.nodes import PusaTask

    return PusaTask.execute(task, num_frames, num_steps, shift, **{**DEFAULTS, **widgets}).args


def _error(**kwargs: Any) -> str:
    from pusa_fw_comfy.errors import PusaNodeError

    with pytest.raises(PusaNodeError) as raised:
        _run(**kwargs)
    message = str(raised.value)
    assert "\n" not in message and message.startswith("Pusa Task: ")
    assert raised.value.__cause__ is None
    return message


def test_the_extension_lists_every_node() -> None:
    import pusa_fw_comfy
    from comfy_api.latest import ComfyExtension

    extension = asyncio.run(pusa_fw_comfy.comfy_entrypoint())
    assert isinstance(extension, ComfyExtension)
    nodes = asyncio.run(extension.get_node_list())
    ids = [node.define_schema().node_id for node in nodes]
    assert ids == ["PusaTask", "PusaConditioning", "PusaSampler", "PusaPromptSchedule", "PusaPromptEmbedding",
                   "PusaPreset"]


def test_schemas_name_their_sockets_and_execute_takes_every_input() -> None:
    import inspect

    from pusa_fw_comfy.nodes import NODES

    expected_outputs = {
        "PusaTask": ["PUSA_PLAN", "IMAGE"], "PusaConditioning": ["LATENT"], "PusaSampler": ["LATENT"],
        "PusaPromptSchedule": ["PUSA_PROMPTS"], "PusaPromptEmbedding": ["CONDITIONING"],
        "PusaPreset": ["INT", "FLOAT", "FLOAT", "COMBO"],
    }
    for node in NODES:
        schema = node.define_schema()
        assert [output.io_type for output in schema.outputs] == expected_outputs[schema.node_id]
        parameters = list(inspect.signature(node.execute).parameters)
        assert parameters == [item.id for item in schema.inputs], schema.node_id
        for item in schema.inputs:  # optional inputs must have a default in execute
            default = inspect.signature(node.execute).parameters[item.id].default
            assert item.optional == (default is not inspect.Parameter.empty), (schema.node_id, item.id)
    sampler = {item.id: item for item in NODES[2].define_schema().inputs}
    assert [sampler[name].io_type for name in ("model", "positive", "negative", "plan", "given")] == [
        "MODEL", "CONDITIONING", "CONDITIONING", "PUSA_PLAN", "LATENT"]
    assert set(sampler["sampler"].options["options"]) >= {"euler", "unipc"}


class BounceTask:
    """A third-party plugin: registers one task (i2v under another name)."""

    @pusa_fw.hookimpl
    def register_tasks(self, register: Any) -> None:
        from pusa_fw_schedules.tasks_frames import ImageToVideo

        class Bounce(ImageToVideo):
            name = "test-bounce"
            summary = "i2v under another name"

        register(Bounce)


def test_task_list_comes_from_the_registry_including_a_third_party_plugin(register_plugin: Any) -> None:
    import pusa_fw_schedules.hooks

    from pusa_fw_comfy.nodes import PusaTask

    register_plugin(pusa_fw_schedules.hooks, name="schedules")
    register_plugin(BounceTask(), name="third-party")
    options = {item.id: item for item in PusaTask.define_schema().inputs}["task"].options["options"]
    assert set(options) == set(pusa_fw.list_components("tasks")) and "test-bounce" in options
    spec, _ = _run("test-bounce", strengths="0.6")
    assert spec.task.strength == 0.6 and bool(spec.plan.held[0])


@pytest.mark.parametrize(("task", "widgets", "params"), [
    ("i2v", {"strengths": "0.8"}, {"strength": 0.8}),
    ("start-end", {"strengths": "0.8, 0.5"}, {"strengths": [0.8, 0.5]}),
    ("keyframes", {"positions": "0, 8, 16", "strengths": "1.0"}, {"positions": [0, 8, 16], "strengths": [1.0]}),
    ("rolling", {"params": '{"window": 9, "overlap": 5, "image": true}', "positions": "12"},
     {"window": 9, "overlap": 5, "image": True, "keyframes": [12]}),
    ("t2v", {"schedule": "pyramid", "schedule_params": '{"ar_step": 1}'},
     {"schedule": "pyramid", "schedule_params": {"ar_step": 1}}),
    ("i2v", {"policy": "renoise", "policy_params": '{"level": 0.05}'},
     {"policy": "renoise", "policy_params": {"level": 0.05}}),
])
def test_the_plan_is_the_one_pusa_fw_compiles(task: str, widgets: dict[str, str], params: dict[str, Any]) -> None:
    spec, heatmap = _run(task, **widgets)
    expected = pusa_fw.get_task(task, **params).plan(num_frames=17, num_steps=4, shift=5.0)
    assert torch.equal(spec.plan.sigmas, expected.sigmas) and torch.equal(spec.plan.windows, expected.windows)
    assert spec.task == pusa_fw.get_task(task, **params)
    assert spec.num_frames == 17 and spec.num_latent_frames == expected.num_latent_frames
    assert heatmap.dim() == 4 and heatmap.shape[0] == 1 and heatmap.shape[-1] == 3
    assert heatmap.dtype == torch.float32 and 0.0 <= heatmap.min() and heatmap.max() <= 1.0
    assert heatmap.std() > 0.05  # a drawing, not a blank


def test_bad_task_inputs_are_one_line_node_errors() -> None:
    assert "40" in _error(task="keyframes", positions="0, 40")  # past the end of 17 frames
    assert "strength" in _error(task="i2v", strengths="1.5")
    assert "takes no strengths" in _error(task="t2v", strengths="0.8")
    assert "takes no keyframe positions" in _error(task="i2v", positions="0")
    assert "not valid JSON" in _error(task="i2v", params="{window: 3}")
    assert "JSON object" in _error(task="i2v", params="[1, 2]")
    assert "given twice" in _error(task="i2v", strengths="0.8", params='{"strength": 0.7}')
    assert "num_frames=18" in _error(task="t2v", num_frames=18)
    assert "comma-separated int" in _error(task="keyframes", positions="0, a")
    assert "windw" in _error(task="i2v", params='{"windw": 3}')
