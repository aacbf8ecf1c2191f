"""The Pusa Preset node: the CLI's preset values (never a copy of them), on sockets that link into the Pusa
Task's and Pusa Sampler's widgets."""

from __future__ import annotations

import pytest

from pusa_fw_wan.cli.presets import PRESETS, Preset

OUTPUT_TARGETS = {"num_steps": ("PusaTask", "num_steps"), "shift": ("PusaTask", "shift"),
                  "cfg": ("PusaSampler", "cfg"), "sampler": ("PusaSampler", "sampler")}
"""Preset output -> the node input it is wired into."""


def _inputs(node: type) -> dict:
    return {item.id: item for item in node.define_schema().inputs}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_outputs_are_the_cli_presets_values(name: str) -> None:
    from pusa_fw_comfy.nodes import PusaPreset, PusaSampler

    outputs = PusaPreset.execute(name).args
    values = PRESETS[name].values
    assert outputs == (values["num_steps"], values["shift"], values["cfg"], values["sampler"])
    assert [type(value) for value in outputs] == [int, float, float, str]
    assert outputs[3] in _inputs(PusaSampler)["sampler"].options["options"]


def test_the_lightx2v_preset_is_four_steps_shift_5_cfg_1_euler() -> None:
    from pusa_fw_comfy.nodes import PusaPreset

    assert PusaPreset.execute("lightx2v").args == (4, 5.0, 1.0, "euler")
    assert PusaPreset.execute("lightx2v-lcm").args == (4, 5.0, 1.0, "lcm")


def test_the_combo_lists_every_preset_and_the_outputs_fit_their_targets() -> None:
    """Each output's socket type is the type of the widget it links into (the front end and ComfyUI's /prompt
    validation both compare type names; a combo input's is COMBO)."""
    from pusa_fw_comfy import nodes

    schema = nodes.PusaPreset.define_schema()
    preset = _inputs(nodes.PusaPreset)["preset"]
    assert preset.io_type == "COMBO" and preset.options["options"] == sorted(PRESETS)
    assert preset.default == "lightx2v"
    assert [output.id for output in schema.outputs] == list(OUTPUT_TARGETS)
    for output in schema.outputs:
        node_id, input_id = OUTPUT_TARGETS[output.id]
        target = _inputs(getattr(nodes, node_id))[input_id]
        assert output.io_type == target.io_type, output.id
        assert output.display_name == output.id  # ComfyUI names an output by its type otherwise
    assert nodes.PusaPreset in nodes.NODES


def test_a_value_the_preset_leaves_out_is_generates_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from pusa_fw_comfy.nodes import PusaPreset
    from pusa_fw_wan.cli.generate_config import GenerateConfig

    monkeypatch.setitem(PRESETS, "steps-only", Preset("steps-only", {"num_steps": 6}))
    defaults = GenerateConfig.model_fields
    assert PusaPreset.execute("steps-only").args == (
        6, defaults["shift"].default, defaults["cfg"].default, defaults["sampler"].default)


@pytest.mark.parametrize(("name", "preset", "fragment"), [
    ("nope", None, "Pusa Preset: preset 'nope' is unknown; choose one of lightx2v, lightx2v-lcm"),
    ("odd", Preset("odd", {"sampler": "dpm9"}), "Pusa Preset: preset 'odd' uses sampler 'dpm9', which no"),
])
def test_refusals_are_one_line_node_errors(monkeypatch: pytest.MonkeyPatch, name: str, preset: Preset | None,
                                           fragment: str) -> None:
    from pusa_fw_comfy.errors import PusaNodeError
    from pusa_fw_comfy.nodes import PusaPreset

    if preset is not None:
        monkeypatch.setitem(PRESETS, name, preset)
    with pytest.raises(PusaNodeError) as raised:
        PusaPreset.execute(name)
    assert str(raised.value).startswith(fragment) and "\n" not in str(raised.value)
