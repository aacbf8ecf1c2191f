"""The example workflows and the prompt-embedding node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

PACK = Path(__file__).resolve().parents[2] / "plugins" / "pusa_fw_comfy"
API = sorted((PACK / "workflows" / "api").glob("*.json"))
EXAMPLES = {"pusa_i2v", "pusa_start_end", "pusa_keyframes", "pusa_extension", "pusa_rolling"}


def test_every_example_has_an_api_workflow() -> None:
    assert {path.stem for path in API} == EXAMPLES


@pytest.mark.parametrize("path", API, ids=lambda path: path.stem)
def test_api_workflows_fit_the_node_schemas_and_compile(path: Path) -> None:
    from pusa_fw_comfy.nodes import NODES, PusaTask

    schemas = {node.define_schema().node_id: node.define_schema() for node in NODES}
    graph: dict[str, Any] = json.loads(path.read_text())
    for node_id, node in graph.items():
        for value in node["inputs"].values():  # every link points at an existing node
            if isinstance(value, list):
                assert value[0] in graph, (path.stem, node_id, value)
        schema = schemas.get(node["class_type"])
        if schema is None:
            continue
        inputs = {item.id: item for item in schema.inputs}
        assert set(node["inputs"]) <= set(inputs), (path.stem, node["class_type"])
        required = {name for name, item in inputs.items() if not item.optional}
        assert required <= set(node["inputs"]), (path.stem, node["class_type"], required - set(node["inputs"]))
    tasks = [node for node in graph.values() if node["class_type"] == "PusaTask"]
    assert len(tasks) == 1
    spec, _ = PusaTask.execute(**tasks[0]["inputs"]).args
    assert spec.num_latent_frames >= 21
    samplers = [node for node in graph.values() if node["class_type"] == "PusaSampler"]
    loras = [node for node in graph.values() if node["class_type"] == "LoraLoaderModelOnly"]
    assert len(samplers) == 1 and loras[0]["inputs"]["strength_model"] == 1.4
    saved = {node["class_type"] for node in graph.values()}
    assert {"SaveLatent", "SaveVideo", "VAEDecode", "PusaConditioning"} <= saved


def test_the_rolling_example_changes_its_prompt() -> None:
    graph = json.loads((PACK / "workflows" / "api" / "pusa_rolling.json").read_text())
    sampler = next(node for node in graph.values() if node["class_type"] == "PusaSampler")
    schedule = graph[sampler["inputs"]["prompt_schedule"][0]]
    assert schedule["class_type"] == "PusaPromptSchedule" and schedule["inputs"]["frame"] == 81


def test_prompt_embedding_reads_a_pusa_fw_prompt_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from pusa_fw_comfy.errors import PusaNodeError
    from pusa_fw_comfy.nodes import PusaPromptEmbedding

    embedding = torch.randn(7, 32)
    file = tmp_path / "prompt.safetensors"
    save_file({"embedding": embedding}, str(file))
    (conditioning,) = PusaPromptEmbedding.execute(str(file), 512).args
    tensor = conditioning[0][0]
    assert tensor.shape == (1, 512, 32) and torch.equal(tensor[0, :7], embedding)
    assert torch.count_nonzero(tensor[0, 7:]) == 0
    assert PusaPromptEmbedding.execute(str(file), 0).args[0][0][0].shape == (1, 7, 32)
    save_file({"other": embedding}, str(tmp_path / "other.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    for path, words in ((tmp_path / "missing.safetensors", "is not a file"), (tmp_path / "other.safetensors",
                        "no tensor 'embedding'"), (tmp_path / "junk.safetensors", "not a safetensors file")):
        with pytest.raises(PusaNodeError, match=words):
            PusaPromptEmbedding.execute(str(path), 512)
