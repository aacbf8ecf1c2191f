"""The pack's example API workflows, made runnable on the tiny models, and the matching generate options.

`adapt` keeps the workflow's graph and settings (task and strengths, shift, sampler, cfg, history guidance,
prompts, images, decode and SaveLatent) and changes only what a CPU test needs:

- the loaders name the tiny DiT, VAE and LoRAs (the Pusa LoRA becomes a random one in
  the layout ``pusa-fw export-lora`` writes, the LightX2V LoRA a random one in LightX2V's layout, each at
  the workflow's strength);
- CLIPLoader + CLIPTextEncode become Pusa Prompt Embedding nodes reading the embedding pusa-fw computed for
  the same text, copied into ComfyUI's ``models/pusa_embeddings`` (ComfyUI's umT5-xxl loader cannot build
  the tiny encoder);
- frames, size, steps and seed become `SETTINGS` (`SETTINGS_22` for the Wan2.2 TI2V-5B workflows, whose
  sizes are multiples of 32). A widget linked to a Pusa Preset keeps its link (the preset's steps).

`generate_args` reads the same workflow into ``pusa-fw generate`` options, so both sides run one setup; the
widgets a Pusa Preset feeds become ``--preset NAME`` (and no flag of their own, so the preset's values hold
on both sides).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

__all__ = ["LIGHTX2V_EXAMPLE_LORA", "PUSA_EXAMPLE_LORA", "SETTINGS", "SETTINGS_22", "adapt", "bad_embedding_workflow",
           "bad_keyframe_workflow", "generate_args", "prompts_of", "without_lora"]

SETTINGS = {"num_frames": 9, "height": 32, "width": 32, "num_steps": 4, "seed": 42}
"""What the tiny run uses in place of the examples' 81 frames at 832x480, 10 steps, seed 0."""
SETTINGS_22 = {"num_frames": 9, "height": 64, "width": 32, "num_steps": 4, "seed": 42}
"""The TI2V-5B examples' tiny run (121 frames at 1280x704, 50 steps): 3 latent frames of 4 x 2 cells (/16)."""
PUSA_EXAMPLE_LORA = "pusa_v1.safetensors"
LIGHTX2V_EXAMPLE_LORA = "Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank64.safetensors"
"""The LoRA file names the example workflows load: Pusa V1, and LightX2V's Wan2.1 4-step distill LoRA."""
PRESET_WIDGETS = {("PusaTask", "num_steps"): "--num-steps", ("PusaTask", "shift"): "--shift",
                  ("PusaSampler", "cfg"): "--cfg", ("PusaSampler", "sampler"): "--sampler"}
"""The widgets a Pusa Preset can feed, and the generate flag each one is otherwise given as."""

Nodes = dict[str, dict[str, Any]]


def _of(workflow: Nodes, class_type: str) -> list[str]:
    return [key for key, node in workflow.items() if node["class_type"] == class_type]


def _one(workflow: Nodes, class_type: str) -> dict[str, Any]:
    keys = _of(workflow, class_type)
    if len(keys) != 1:
        raise ValueError(f"expected one {class_type} node in the example workflow, found {len(keys)}")
    return workflow[keys[0]]["inputs"]


def _text(workflow: Nodes, link: list[Any]) -> str:
    node = workflow[link[0]]
    if node["class_type"] != "CLIPTextEncode":
        raise ValueError(f"sampler text input comes from {node['class_type']}, expected CLIPTextEncode")
    return str(node["inputs"]["text"])


def prompts_of(workflow: Nodes) -> tuple[str, str]:
    """The positive and negative prompt texts the Pusa Sampler of `workflow` gets."""
    sampler = _one(workflow, "PusaSampler")
    return _text(workflow, sampler["positive"]), _text(workflow, sampler["negative"])


def adapt(
    workflow: Nodes,
    dit_name: str,
    vae_name: str,
    embeddings: dict[str, str],
    loras: dict[str, str] | None = None,
    settings: dict[str, int] = SETTINGS,
) -> Nodes:
    """A copy of `workflow` for the tiny models (see the module docstring).

    Args:
        workflow: an example API workflow of the pack.
        dit_name: file name of the tiny DiT in ``models/diffusion_models``.
        vae_name: file name of the tiny VAE in ``models/vae``.
        embeddings: prompt text -> name of its embedding file (a pusa-fw prompt cache entry) in ComfyUI's
            ``models/pusa_embeddings``.
        loras: the example's LoRA file name (`PUSA_EXAMPLE_LORA`, `LIGHTX2V_EXAMPLE_LORA`) -> file name of
            its tiny stand-in in ``models/loras`` (strengths stay the workflow's); None bypasses every
            LoRA loader.
        settings: frames, size, steps and seed of the run (`SETTINGS` or `SETTINGS_22`).

    Raises:
        ValueError: a LoRA loader names a file `loras` has no stand-in for.
    """
    nodes = copy.deepcopy(workflow)
    bypass: dict[str, list[Any]] = {}
    for key in _of(nodes, "LoraLoaderModelOnly"):
        if loras is None:
            bypass[key] = nodes.pop(key)["inputs"]["model"]
        else:
            nodes[key]["inputs"]["lora_name"] = _stand_in(loras, nodes[key]["inputs"]["lora_name"])
    for key in _of(nodes, "CLIPTextEncode"):
        text = nodes[key]["inputs"]["text"]
        nodes[key] = {
            "class_type": "PusaPromptEmbedding",
            "inputs": {"embedding": embeddings[text], "pad_to": 512},
        }
    for key in _of(nodes, "CLIPLoader"):
        del nodes[key]
    for node in nodes.values():
        for name, value in node["inputs"].items():
            while isinstance(value, list) and value and value[0] in bypass:  # through chained loaders
                value = node["inputs"][name] = bypass[value[0]]
    _one(nodes, "UNETLoader").update(unet_name=dit_name, weight_dtype="default")
    _one(nodes, "VAELoader").update(vae_name=vae_name)
    task = _one(nodes, "PusaTask")
    task.update(num_frames=settings["num_frames"])
    if not isinstance(task["num_steps"], list):  # a Pusa Preset's steps stay linked
        task.update(num_steps=settings["num_steps"])
    _one(nodes, "PusaConditioning").update(width=settings["width"], height=settings["height"])
    _one(nodes, "PusaSampler").update(seed=settings["seed"])
    return nodes


def _stand_in(loras: dict[str, str], name: str) -> str:
    if name not in loras:
        raise ValueError(f"the example loads LoRA {name!r}; the integration run has stand-ins for {sorted(loras)}")
    return loras[name]


def without_lora(workflow: Nodes, lora_name: str) -> Nodes:
    """`workflow` without the LoRA loader of `lora_name`: what read its MODEL reads the loader's input."""
    nodes = copy.deepcopy(workflow)
    (key,) = [key for key in _of(nodes, "LoraLoaderModelOnly") if nodes[key]["inputs"]["lora_name"] == lora_name]
    source = nodes.pop(key)["inputs"]["model"]
    for node in nodes.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list) and value[0] == key:
                node["inputs"][name] = source
    return nodes


def bad_keyframe_workflow(adapted: Nodes) -> Nodes:
    """`adapted` with a keyframes task whose second keyframe (pixel 40) is past the end of the video."""
    nodes = copy.deepcopy(adapted)
    _one(nodes, "PusaTask").update(task="keyframes", strengths="0.8", positions="0, 40")
    return nodes


def bad_embedding_workflow(adapted: Nodes, name: str) -> Nodes:
    """`adapted` with its first Pusa Prompt Embedding asking for `name` (a value not in the node's list)."""
    nodes = copy.deepcopy(adapted)
    key = _of(nodes, "PusaPromptEmbedding")[0]
    nodes[key]["inputs"]["embedding"] = name
    return nodes


def _images(workflow: Nodes, link: list[Any]) -> list[str]:
    """The LoadImage file names behind an IMAGE link, through ImageBatch nodes, in batch order."""
    node = workflow[link[0]]
    if node["class_type"] == "LoadImage":
        return [str(node["inputs"]["image"])]
    if node["class_type"] == "ImageBatch":
        return _images(workflow, node["inputs"]["image1"]) + _images(workflow, node["inputs"]["image2"])
    raise ValueError(f"an IMAGE from {node['class_type']} is not supported by the integration run")


def generate_args(
    workflow: Nodes, input_dir: Path, loras: dict[str, Path] | None = None, settings: dict[str, int] = SETTINGS
) -> list[str]:
    """``pusa-fw generate`` options that run what `adapt(workflow, settings=settings)` runs in ComfyUI.

    Args:
        workflow: an example API workflow of the pack.
        input_dir: ComfyUI's ``input`` folder (the LoadImage files).
        loras: the example's LoRA file name -> the stand-in file its adapted loader reads (as `adapt`'s
            `loras`, with paths), given as ``--lora`` at the workflow's strengths, base model first;
            None: no LoRA (the loaders are bypassed).
        settings: frames, size, steps and seed of the run (`SETTINGS` or `SETTINGS_22`).

    Raises:
        ValueError: the workflow uses a task setting the run does not map (then extend this function).
    """
    task = _one(workflow, "PusaTask")
    conditioning = _one(workflow, "PusaConditioning")
    sampler = _one(workflow, "PusaSampler")
    for name in ("params", "schedule_params", "policy_params"):
        if str(task[name]).strip() not in ("", "{}"):
            raise ValueError(f"PusaTask {name}={task[name]!r} is not mapped to generate options")
    for name in ("schedule", "policy"):
        if task[name] != "(task default)":
            raise ValueError(f"PusaTask {name}={task[name]!r} is not mapped to generate options")
    strengths = [item.strip() for item in str(task["strengths"]).split(",") if item.strip()]
    positive, negative = prompts_of(workflow)
    frames = settings["num_frames"]
    args = [
        "--task",
        task["task"],
        "--prompt",
        positive,
        "--negative-prompt",
        negative,
        "--num-frames",
        str(frames),
        "--height",
        str(settings["height"]),
        "--width",
        str(settings["width"]),
        "--seed",
        str(settings["seed"]),
        "--history-guidance",
        str(sampler["history_guidance"]),
        "--keyframe-encoding",
        conditioning["keyframe_encoding"],
    ]
    args += _sampling_args(workflow, settings)
    if "image" in conditioning:
        args += ["--image", str(input_dir / _images(workflow, conditioning["image"])[0])]
        if task["task"] == "i2v" and strengths:
            args += ["--strength", strengths[0]]
    if "keyframes" in conditioning:
        names = _images(workflow, conditioning["keyframes"])
        if task["task"] == "start-end":
            positions = [0, frames - 1]
        else:
            positions = [int(item) for item in str(task["positions"]).split(",") if item.strip()]
        if len(positions) != len(names) or (strengths and len(strengths) != len(names)):
            raise ValueError(
                f"{len(names)} keyframe images for positions {positions} and strengths {strengths}"
            )
        for index, (position, name) in enumerate(zip(positions, names)):
            suffix = f":{strengths[index]}" if strengths else ""
            args += ["--keyframe", f"{position}:{input_dir / name}{suffix}"]
    if sampler.get("cache", "none") != "none":
        args += ["--cache", sampler["cache"], "--cache-params", str(sampler.get("cache_params", "{}"))]
    if loras is not None:
        for loader in _lora_chain(workflow):
            args += [f"--lora={loras[loader['lora_name']]}:{loader['strength_model']}"]
    if any(name in conditioning for name in ("video", "video_b")):
        raise ValueError("video inputs are not mapped to generate options")
    return args


def _sampling_args(workflow: Nodes, settings: dict[str, int]) -> list[str]:
    """Steps, shift, sampler and cfg: ``--preset NAME`` for the widgets a Pusa Preset feeds, a flag each
    for the others (explicit flags override a preset on the command line, as an unlinked widget does)."""
    preset_names, args = set(), []
    for (class_type, name), flag in PRESET_WIDGETS.items():
        value = _one(workflow, class_type)[name]
        if isinstance(value, list):
            source = workflow[value[0]]
            if source["class_type"] != "PusaPreset":
                raise ValueError(f"{class_type}.{name} comes from {source['class_type']}, expected PusaPreset")
            preset_names.add(str(source["inputs"]["preset"]))
            continue
        args += [flag, str(settings["num_steps"] if name == "num_steps" else value)]
    if len(preset_names) > 1:
        raise ValueError(f"the workflow mixes presets {sorted(preset_names)}; generate takes one")
    return [*(["--preset", preset_names.pop()] if preset_names else []), *args]


def _lora_chain(workflow: Nodes) -> list[dict[str, Any]]:
    """The LoraLoaderModelOnly inputs between the model loader and the Pusa Sampler, base model first."""
    chain = []
    link = _one(workflow, "PusaSampler")["model"]
    while workflow[link[0]]["class_type"] == "LoraLoaderModelOnly":
        chain.append(workflow[link[0]]["inputs"])
        link = chain[-1]["model"]
    if len(chain) != len(_of(workflow, "LoraLoaderModelOnly")):
        raise ValueError("a LoraLoaderModelOnly is not on the sampler's model path")
    return chain[::-1]
