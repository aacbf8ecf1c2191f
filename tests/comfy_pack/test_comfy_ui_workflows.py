"""The UI-format example workflows (LiteGraph JSON) are the API-format ones, drawn.

They are written by ``tools/make_ui_workflows.py`` from a live ComfyUI's /object_info; here, without
ComfyUI, each is checked against its API twin: the same nodes, every link in the right socket, and the
Pusa nodes' widget values in their schema's order (with the front end's "control after generate" value
after the seed). A widget linked in the API twin (a Pusa Preset output) has its socket, marked ``widget``,
after the node's other sockets and keeps its default in the list, as the front end saves it; every link
joins an output and an input of one type name (the front end's connection check).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

PACK = Path(__file__).resolve().parents[2] / "plugins" / "pusa_fw_comfy"
UI = sorted((PACK / "workflows").glob("pusa_*.json"))
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def test_every_api_workflow_has_a_ui_twin() -> None:
    assert {path.name for path in UI} == {path.name for path in (PACK / "workflows" / "api").glob("*.json")}
    assert len(UI) == 8


def _pusa_widgets(class_type: str) -> list[Any] | None:
    from pusa_fw_comfy.nodes import NODES

    schema = next(
        (node.define_schema() for node in NODES if node.define_schema().node_id == class_type), None
    )
    if schema is None:
        return None
    ordered = [item for item in schema.inputs if not item.optional] + [
        item for item in schema.inputs if item.optional
    ]
    return [item for item in ordered if item.io_type in WIDGET_TYPES]


@pytest.mark.parametrize("path", UI, ids=lambda path: path.stem)
def test_ui_workflow_is_its_api_twin(path: Path) -> None:
    ui = json.loads(path.read_text())
    api: dict[str, Any] = json.loads((PACK / "workflows" / "api" / path.name).read_text())
    ids = {key: index + 1 for index, key in enumerate(sorted(api, key=int))}
    nodes = {node["id"]: node for node in ui["nodes"]}
    assert {ids[key]: node["class_type"] for key, node in api.items()} == {
        node_id: node["type"] for node_id, node in nodes.items()
    }
    links = {link[0]: link for link in ui["links"]}
    expected_links = 0
    for key, node in api.items():
        target = nodes[ids[key]]
        widgets = _pusa_widgets(node["class_type"])
        for name, value in node["inputs"].items():
            if not isinstance(value, list):
                continue
            expected_links += 1
            socket = next(item for item in target["inputs"] if item["name"] == name)
            if widgets is not None:  # a Pusa node: a linked widget's socket says so
                assert bool(socket.get("widget")) == (name in {item.id for item in widgets}), name
            if socket.get("widget"):  # after every socket that is not a widget
                assert socket["widget"] == {"name": name} and socket["type"] in WIDGET_TYPES
                assert all(item.get("widget") for item in target["inputs"][target["inputs"].index(socket):])
            link = links[socket["link"]]
            assert link[1:5] == [ids[value[0]], value[1], ids[key], target["inputs"].index(socket)], (
                name,
                link,
            )
            output = nodes[ids[value[0]]]["outputs"][value[1]]
            assert socket["link"] in output["links"]
            assert link[5] == output["type"] == socket["type"], (name, link, output["type"], socket["type"])
        if widgets is None:
            continue
        expected: list[Any] = []
        for item in widgets:
            value = node["inputs"][item.id]
            expected.append(item.default if isinstance(value, list) else value)
            if item.options.get("control_after_generate"):
                expected.append("fixed")
        assert target["widgets_values"] == expected, node["class_type"]
    assert expected_links == len(ui["links"]) == ui["last_link_id"]
