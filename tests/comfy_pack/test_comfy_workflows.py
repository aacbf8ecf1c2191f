"""The example workflows and the prompt-embedding node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

PACK = Path(__file__).resolve().parents[2] / "plugins" / "pusa_fw_comfy"
API = sorted((PACK / "workflows" / "api").glob("*.json"))
EXAMPLES = {"pusa_i2v", "pusa_start_end", "pusa_keyframes", "pusa_extension", "pusa_rolling", "pusa_i2v_lightx2v",
            "pusa_ti2v_5b_i2v", "pusa_ti2v_5b_start_end"}
PUSA_LORA = "pusa_v1.safetensors"
LIGHTX2V_LORA = "Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank64.safetensors"


def _resolved(graph: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """`inputs` with every link from a Pusa Preset replaced by the value that output gives."""
    from pusa_fw_comfy.nodes import PusaPreset

    resolved = dict(inputs)
    for name, value in inputs.items():
        if isinstance(value, list) and graph[value[0]]["class_type"] == "PusaPreset":
            resolved[name] = PusaPreset.execute(**graph[value[0]]["inputs"]).args[value[1]]
    return resolved


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
    spec, _ = PusaTask.execute(**_resolved(graph, tasks[0]["inputs"])).args
    assert spec.num_latent_frames >= 21
    samplers = [node for node in graph.values() if node["class_type"] == "PusaSampler"]
    loras = [node for node in graph.values() if node["class_type"] == "LoraLoaderModelOnly"]
    vae = next(node for node in graph.values() if node["class_type"] == "VAELoader")["inputs"]["vae_name"]
    conditioning = next(node for node in graph.values() if node["class_type"] == "PusaConditioning")["inputs"]
    assert len(samplers) == 1
    if path.stem.startswith("pusa_ti2v_5b_"):  # Wan2.2 TI2V-5B: its VAE, no LoRA, sizes in multiples of 32
        model = graph[samplers[0]["inputs"]["model"][0]]["inputs"]
        assert not loras and "wan2.2" in vae and "ti2v_5B" in model["unet_name"]
        assert (conditioning["width"], conditioning["height"]) == (1280, 704) and spec.num_frames == 121
        assert bool(spec.plan.held[0]) and float(spec.plan.sigmas[:, 0].max()) == 0.0  # frame 0 held clean
    else:
        pusa = [lora["inputs"] for lora in loras if lora["inputs"]["lora_name"] == PUSA_LORA]
        assert len(pusa) == 1 and pusa[0]["strength_model"] == 1.4 and "2.1" in vae
    saved = {node["class_type"] for node in graph.values()}
    assert {"SaveLatent", "SaveVideo", "VAEDecode", "PusaConditioning"} <= saved


def test_the_rolling_example_changes_its_prompt() -> None:
    graph = json.loads((PACK / "workflows" / "api" / "pusa_rolling.json").read_text())
    sampler = next(node for node in graph.values() if node["class_type"] == "PusaSampler")
    schedule = graph[sampler["inputs"]["prompt_schedule"][0]]
    assert schedule["class_type"] == "PusaPromptSchedule" and schedule["inputs"]["frame"] == 81


def test_prompt_embedding_reads_a_file_from_the_pusa_embeddings_folder(tmp_path: Path) -> None:
    import folder_paths
    from safetensors.torch import save_file

    from pusa_fw_comfy.errors import PusaNodeError
    from pusa_fw_comfy.nodes import PusaPromptEmbedding

    folder = Path(folder_paths.models_dir) / "pusa_embeddings"
    (folder / "sub").mkdir(parents=True)
    embedding = torch.randn(7, 32)
    save_file({"embedding": embedding}, str(folder / "prompt.safetensors"))
    save_file({"embedding": embedding[:3]}, str(folder / "sub" / "short.safetensors"))
    save_file({"other": embedding}, str(folder / "other.safetensors"))
    (folder / "junk.safetensors").write_bytes(b"not a tensor file")
    (folder / "notes.txt").write_text("not listed")
    combo = {item.id: item for item in PusaPromptEmbedding.define_schema().inputs}["embedding"]
    assert combo.io_type == "COMBO"
    assert combo.options["options"] == ["junk.safetensors", "other.safetensors", "prompt.safetensors",
                                        "sub/short.safetensors"]
    (conditioning,) = PusaPromptEmbedding.execute("prompt.safetensors", 512).args
    tensor = conditioning[0][0]
    assert tensor.shape == (1, 512, 32) and torch.equal(tensor[0, :7], embedding)
    assert torch.count_nonzero(tensor[0, 7:]) == 0
    assert PusaPromptEmbedding.execute("prompt.safetensors", 0).args[0][0][0].shape == (1, 7, 32)
    assert PusaPromptEmbedding.execute("sub/short.safetensors", 0).args[0][0][0].shape == (1, 3, 32)
    for name, words in (("other.safetensors", "no tensor 'embedding'"), ("junk.safetensors", "not a safetensors")):
        with pytest.raises(PusaNodeError, match=words):
            PusaPromptEmbedding.execute(name, 512)


def test_prompt_embedding_reads_nothing_outside_its_folder(tmp_path: Path) -> None:
    """A value that is not a listed name is refused before any file is read, and the folder is not shown."""
    import folder_paths
    from safetensors.torch import save_file

    from pusa_fw_comfy.errors import PusaNodeError
    from pusa_fw_comfy.nodes import PusaPromptEmbedding

    models = Path(folder_paths.models_dir)
    folder = models / "pusa_embeddings"
    folder.mkdir(parents=True)
    save_file({"embedding": torch.randn(2, 8)}, str(folder / "listed.safetensors"))
    outside = models / "outside.safetensors"
    save_file({"embedding": torch.randn(2, 8), "secret_tensor": torch.zeros(1)}, str(outside))
    home = Path("~").expanduser() / "pusa_fw_probe_does_not_exist.safetensors"
    for value in (str(outside), "../outside.safetensors", "sub/../../outside.safetensors", str(home),
                  "~/outside.safetensors", "~", "/etc/passwd", "", "listed.safetensors/../listed.safetensors"):
        with pytest.raises(PusaNodeError) as raised:
            PusaPromptEmbedding.execute(value, 512)
        message = str(raised.value)
        assert "\n" not in message and "is not a file listed in ComfyUI's models/pusa_embeddings" in message
        assert ("listed" in value or "listed.safetensors" not in message) and "secret" not in message
    assert PusaPromptEmbedding.execute("listed.safetensors", 0).args[0][0][0].shape == (1, 2, 8)


def test_the_lightx2v_example_takes_steps_shift_cfg_and_sampler_from_the_preset() -> None:
    """Pusa Preset (lightx2v) feeds the task and the sampler; the LightX2V LoRA (1.0) sits between the model
    and the Pusa LoRA (1.4); the compiled plan walks LightX2V's sigmas 1, 0.9375, 0.8333, 0.625, 0."""
    from pusa_fw_comfy.nodes import PusaSampler, PusaTask

    graph = json.loads((PACK / "workflows" / "api" / "pusa_i2v_lightx2v.json").read_text())
    (preset_id,) = [key for key, node in graph.items() if node["class_type"] == "PusaPreset"]
    task = next(node for node in graph.values() if node["class_type"] == "PusaTask")["inputs"]
    sampler = next(node for node in graph.values() if node["class_type"] == "PusaSampler")["inputs"]
    assert graph[preset_id]["inputs"] == {"preset": "lightx2v"}
    assert (task["num_steps"], task["shift"]) == ([preset_id, 0], [preset_id, 1])
    assert (sampler["cfg"], sampler["sampler"]) == ([preset_id, 2], [preset_id, 3])
    pusa = graph[sampler["model"][0]]
    lightx2v = graph[pusa["inputs"]["model"][0]]
    assert pusa["inputs"]["lora_name"] == PUSA_LORA and pusa["inputs"]["strength_model"] == 1.4
    assert lightx2v["inputs"]["lora_name"] == LIGHTX2V_LORA and lightx2v["inputs"]["strength_model"] == 1.0
    assert graph[lightx2v["inputs"]["model"][0]]["class_type"] == "UNETLoader"
    resolved = _resolved(graph, sampler)
    assert (resolved["cfg"], resolved["sampler"]) == (1.0, "euler")
    assert resolved["sampler"] in {item.id: item for item in PusaSampler.define_schema().inputs}["sampler"].options[
        "options"]
    spec, _ = PusaTask.execute(**_resolved(graph, task)).args
    assert spec.num_steps == 4 and not bool(spec.plan.held[1])
    sigmas = spec.plan.sigmas[:, 1].tolist()
    assert sigmas == pytest.approx([1.0, 0.9375, 0.8333333, 0.625, 0.0], abs=1e-6)
