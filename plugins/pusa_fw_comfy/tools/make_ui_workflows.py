"""Write the example workflows in ComfyUI's UI format (LiteGraph JSON, ``workflows/pusa_*.json``).

Each one is drawn from its API-format twin in ``workflows/api`` (written by ``make_api_workflows.py``).
The UI format stores a node's widget values as a list in the order ComfyUI's front end shows them, so the
order comes from a running ComfyUI's ``/object_info`` (``input_order``, with the hidden "control after
generate" value after a seed and the upload widget's value after a LoadImage/LoadVideo file name). A
widget that is linked in the API workflow (a Pusa Preset output) is saved as the front end saves it: a
socket with ``widget`` after the node's other sockets, and its own value (the default) kept in the list.
Nodes are laid out left to right by their depth in the graph.

Run (ComfyUI with this pack in ``custom_nodes`` listening on PORT)::

    python plugins/pusa_fw_comfy/tools/make_ui_workflows.py --object-info http://127.0.0.1:PORT/object_info

``--object-info`` also takes a saved copy of that JSON.
"""

from __future__ import annotations

import argparse
import json
import urllib.request
from pathlib import Path
from typing import Any

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload")
COLUMN_WIDTH = 380
NODE_WIDTH = 330
ROW_GAP = 40


def _is_widget(spec: list[Any]) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _type(kind: Any) -> str:
    """A socket type as the front end names it (an option list is a ``COMBO``)."""
    return "COMBO" if isinstance(kind, list) else str(kind)


def _input_specs(info: dict[str, Any]) -> list[tuple[str, list[Any], bool]]:
    """(name, spec, optional) of every input of a node, in the front end's order."""
    inputs = info.get("input", {})
    order = info.get("input_order") or {
        group: list(inputs.get(group, {})) for group in ("required", "optional")
    }
    found = []
    for group in ("required", "optional"):
        for name in order.get(group, []):
            if name in inputs.get(group, {}):
                found.append((name, inputs[group][name], group == "optional"))
    return found


def _widget_values(node: dict[str, Any], info: dict[str, Any]) -> list[Any]:
    values = []
    for name, spec, _ in _input_specs(info):
        if not _is_widget(spec):
            continue
        options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        value = node["inputs"].get(name, options.get("default"))
        if isinstance(value, list):  # a linked widget keeps a value of its own, unused while linked
            value = options.get("default")
        values.append(value)
        if options.get("control_after_generate") or (name in ("seed", "noise_seed") and spec[0] == "INT"):
            values.append("fixed")
        if any(options.get(key) for key in UPLOAD_OPTIONS):
            values.append("image")
    return values


def _depths(api: dict[str, Any]) -> dict[str, int]:
    depths: dict[str, int] = {}

    def depth(key: str) -> int:
        if key not in depths:
            parents = [value[0] for value in api[key]["inputs"].values() if isinstance(value, list)]
            depths[key] = 1 + max((depth(parent) for parent in parents), default=-1)
        return depths[key]

    for key in api:
        depth(key)
    return depths


def _height(slots: int, info: dict[str, Any], widgets: list[Any]) -> int:
    """A node height that fits its slots and widgets (multiline text boxes get room for a few lines)."""
    multiline = sum(
        1
        for _, spec, _ in _input_specs(info)
        if _is_widget(spec) and len(spec) > 1 and isinstance(spec[1], dict) and spec[1].get("multiline")
    )
    return 40 + 22 * slots + 26 * len(widgets) + 74 * multiline


def to_ui(api: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    """The UI-format (LiteGraph) workflow of an API-format one."""
    missing = sorted({node["class_type"] for node in api.values()} - set(object_info))
    if missing:
        raise ValueError(f"/object_info lacks {missing}; start ComfyUI with this pack and its own nodes")
    ids = {key: index + 1 for index, key in enumerate(sorted(api, key=int))}
    depths = _depths(api)
    links: list[list[Any]] = []
    outgoing: dict[tuple[str, int], list[int]] = {}
    nodes_out: dict[str, dict[str, Any]] = {}
    for key in sorted(api, key=lambda item: (depths[item], int(item))):
        node, info = api[key], object_info[api[key]["class_type"]]
        inputs = []
        specs = _input_specs(info)
        sockets = [item for item in specs if not _is_widget(item[1])]
        # the front end saves a widget's socket only while it is linked, after the other sockets
        linked_widgets = [
            item for item in specs if _is_widget(item[1]) and isinstance(node["inputs"].get(item[0]), list)
        ]
        for name, spec, optional in sockets + linked_widgets:
            link = None
            value = node["inputs"].get(name)
            if isinstance(value, list):
                source, slot = value[0], int(value[1])
                link = len(links) + 1
                links.append(
                    [
                        link,
                        ids[source],
                        slot,
                        ids[key],
                        len(inputs),
                        _type(object_info[api[source]["class_type"]]["output"][slot]),
                    ]
                )
                outgoing.setdefault((source, slot), []).append(link)
            entry: dict[str, Any] = {"name": name, "type": _type(spec[0]), "link": link}
            if _is_widget(spec):
                entry["widget"] = {"name": name}
            if optional:
                entry["shape"] = 7
            inputs.append(entry)
        widgets = _widget_values(node, info)
        nodes_out[key] = {
            "id": ids[key],
            "type": node["class_type"],
            "pos": [0, 0],
            "size": [NODE_WIDTH, _height(max(len(inputs), len(info["output"])), info, widgets)],
            "flags": {},
            "order": 0,
            "mode": 0,
            "inputs": inputs,
            "outputs": [],
            "properties": {"Node name for S&R": node["class_type"]},
            "widgets_values": widgets,
        }
    for order, key in enumerate(sorted(api, key=lambda item: (depths[item], int(item)))):
        info = object_info[api[key]["class_type"]]
        names = info.get("output_name") or info["output"]
        nodes_out[key]["order"] = order
        nodes_out[key]["outputs"] = [
            {"name": names[slot], "type": _type(kind), "links": outgoing.get((key, slot), []), "slot_index": slot}
            for slot, kind in enumerate(info["output"])
        ]
    columns: dict[int, int] = {}
    for key in sorted(api, key=lambda item: (depths[item], int(item))):
        column = depths[key]
        top = columns.get(column, 0)
        nodes_out[key]["pos"] = [40 + column * COLUMN_WIDTH, 40 + top]
        columns[column] = top + nodes_out[key]["size"][1] + ROW_GAP
    return {
        "last_node_id": max(ids.values()),
        "last_link_id": len(links),
        "nodes": [nodes_out[key] for key in sorted(api, key=int)],
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
        "version": 0.4,
    }


def _object_info(source: str) -> dict[str, Any]:
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=60) as response:
            return json.loads(response.read())
    return json.loads(Path(source).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--object-info", required=True, help="ComfyUI's /object_info URL or a saved copy")
    options = parser.parse_args()
    object_info = _object_info(options.object_info)
    for path in sorted((WORKFLOWS / "api").glob("pusa_*.json")):
        ui = to_ui(json.loads(path.read_text()), object_info)
        (WORKFLOWS / path.name).write_text(json.dumps(ui, indent=2) + "\n")


if __name__ == "__main__":
    main()
