"""Write the example workflows in ComfyUI's API format (``workflows/api/*.json``).

Each ``pusa_*`` one loads the stock Wan2.1 T2V checkpoint (fp8 works unchanged), the Pusa V1 LoRA at 1.4
through the stock LoRA loader, the umT5 text encoder and the Wan VAE, compiles a pusa-fw task, encodes its
given media, samples with the Pusa Sampler, decodes, and saves the latent and an mp4. The ``pusa_ti2v_5b_*``
ones run Wan2.2 TI2V-5B the same way, with its own Wan2.2 VAE, no LoRA and the model's official settings
(121 frames of 1280x704 at 24 fps, 50 UniPC steps, shift 5, cfg 5; its image-to-video holds frame 0
clean: strength 1). ``pusa_i2v_lightx2v`` is the i2v one on LightX2V's 4-step distill LoRA (strength 1,
loaded before the Pusa LoRA): a Pusa Preset node (``lightx2v``: 4 steps, shift 5, cfg 1, euler) feeds the
task's steps and shift and the sampler's cfg and sampler, as ``pusa-fw generate --preset lightx2v`` does.
File names are the ones ComfyUI's Wan tutorials (and the LoRAs' hosts) use; change them to yours in the
loader nodes.

Run: ``python plugins/pusa_fw_comfy/tools/make_api_workflows.py`` (rewrites the files).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent / "workflows" / "api"

DIT = "wan2.1_t2v_14B_fp8_e4m3fn.safetensors"
LORA = "pusa_v1.safetensors"
LIGHTX2V_LORA = "Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank64.safetensors"
TEXT_ENCODER = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
VAE = "wan_2.1_vae.safetensors"
DIT_5B = "wan2.2_ti2v_5B_fp16.safetensors"
VAE_5B = "wan2.2_vae.safetensors"
NEGATIVE = ("Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, "
            "static, overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra "
            "fingers, poorly drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused "
            "fingers, still picture, messy background, three legs, many people in the background, walking "
            "backwards")


def _task(task: str, num_frames: int, strengths: str = "", positions: str = "", params: str = "{}",
          schedule: str = "(task default)", schedule_params: str = "{}", num_steps: int = 10) -> dict[str, Any]:
    return {"class_type": "PusaTask", "inputs": {
        "task": task, "num_frames": num_frames, "num_steps": num_steps, "shift": 5.0, "strengths": strengths,
        "positions": positions, "params": params, "schedule": schedule, "schedule_params": schedule_params,
        "policy": "(task default)", "policy_params": "{}"}}


def workflow(name: str, task: dict[str, Any], media: dict[str, dict[str, Any]], links: dict[str, list[Any]],
             prompt: str, extra_prompts: list[tuple[int, str]] = (), ti2v_5b: bool = False) -> dict[str, Any]:
    """One API-format workflow: loaders, task, conditioning, sampler, decode, SaveLatent and SaveVideo.

    With `ti2v_5b`: Wan2.2 TI2V-5B and its VAE, no LoRA loader (node 2 absent), 1280x704, cfg 5, 24 fps.
    """
    nodes: dict[str, Any] = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": DIT_5B if ti2v_5b else DIT,
                                                     "weight_dtype": "default"}},
        "2": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": LORA,
                                                              "strength_model": 1.4}},
        "3": {"class_type": "CLIPLoader", "inputs": {"clip_name": TEXT_ENCODER, "type": "wan", "device": "default"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 0], "text": prompt}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 0], "text": NEGATIVE}},
        "6": {"class_type": "VAELoader", "inputs": {"vae_name": VAE_5B if ti2v_5b else VAE}},
        "7": task,
        "8": {"class_type": "PusaConditioning", "inputs": {
            "plan": ["7", 0], "vae": ["6", 0], "width": 1280 if ti2v_5b else 832, "height": 704 if ti2v_5b else 480,
            "keyframe_encoding": "image", **links}},
        "9": {"class_type": "PusaSampler", "inputs": {
            "model": ["1", 0] if ti2v_5b else ["2", 0], "positive": ["4", 0], "negative": ["5", 0],
            "plan": ["7", 0], "given": ["8", 0], "seed": 0, "sampler": "unipc", "cfg": 5.0 if ti2v_5b else 3.0,
            "history_guidance": 1.0, "cache": "none", "cache_params": "{}"}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["6", 0]}},
        "11": {"class_type": "CreateVideo", "inputs": {"images": ["10", 0], "fps": 24.0 if ti2v_5b else 16.0}},
        "12": {"class_type": "SaveVideo", "inputs": {"video": ["11", 0], "filename_prefix": f"pusa/{name}",
                                                     "format": "auto", "codec": "auto"}},
        "13": {"class_type": "SaveLatent", "inputs": {"samples": ["9", 0], "filename_prefix": f"pusa/{name}"}},
    }
    if ti2v_5b:
        del nodes["2"]
    nodes.update(media)
    previous: list[Any] | None = None
    for index, (frame, text) in enumerate(extra_prompts):
        encode_id, schedule_id = str(30 + 2 * index), str(31 + 2 * index)
        nodes[encode_id] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 0], "text": text}}
        inputs: dict[str, Any] = {"conditioning": [encode_id, 0], "frame": frame}
        if previous is not None:
            inputs["schedule"] = previous
        nodes[schedule_id] = {"class_type": "PusaPromptSchedule", "inputs": inputs}
        previous = [schedule_id, 0]
    if previous is not None:
        nodes["9"]["inputs"]["prompt_schedule"] = previous
    return nodes


def with_preset(nodes: dict[str, Any], preset: str, lora: str) -> dict[str, Any]:
    """`nodes` with the preset's LoRA (node 14, strength 1) before the Pusa LoRA and a Pusa Preset (node 15)
    wired into the task's num_steps and shift and the sampler's cfg and sampler."""
    nodes = {**nodes, "14": {"class_type": "LoraLoaderModelOnly", "inputs": {
        "model": ["1", 0], "lora_name": lora, "strength_model": 1.0}},
        "15": {"class_type": "PusaPreset", "inputs": {"preset": preset}}}
    nodes["2"]["inputs"]["model"] = ["14", 0]
    nodes["7"]["inputs"].update(num_steps=["15", 0], shift=["15", 1])
    nodes["9"]["inputs"].update(cfg=["15", 2], sampler=["15", 3])
    return nodes


def _image(name: str) -> dict[str, Any]:
    return {"class_type": "LoadImage", "inputs": {"image": name}}


def _clip(name: str) -> dict[str, Any]:
    return {"class_type": "LoadVideo", "inputs": {"file": name}}


WORKFLOWS = {
    "pusa_i2v": workflow(
        "i2v", _task("i2v", 81, strengths="0.8"), {"20": _image("start.png")}, {"image": ["20", 0]},
        "a red kite rises over a windy beach, the camera follows it"),
    "pusa_start_end": workflow(
        "start_end", _task("start-end", 81, strengths="0.8, 0.5"),
        {"20": _image("first.png"), "21": _image("last.png"),
         "22": {"class_type": "ImageBatch", "inputs": {"image1": ["20", 0], "image2": ["21", 0]}}},
        {"keyframes": ["22", 0]}, "a paper boat drifts across a pond from left to right"),
    "pusa_keyframes": workflow(
        "keyframes", _task("keyframes", 81, strengths="0.8", positions="0, 40, 80"),
        {"20": _image("key0.png"), "21": _image("key40.png"), "22": _image("key80.png"),
         "23": {"class_type": "ImageBatch", "inputs": {"image1": ["20", 0], "image2": ["21", 0]}},
         "24": {"class_type": "ImageBatch", "inputs": {"image1": ["23", 0], "image2": ["22", 0]}}},
        {"keyframes": ["24", 0]}, "a cat walks along a garden wall at sunset"),
    "pusa_extension": workflow(
        "extension", _task("extension", 81, params='{"given_frames": 13}'),
        {"20": _clip("given.mp4"), "21": {"class_type": "GetVideoComponents", "inputs": {"video": ["20", 0]}}},
        {"video": ["21", 0]}, "the train keeps moving along the coast"),
    "pusa_rolling": workflow(
        "rolling", _task("rolling", 161, params='{"window": 81, "overlap": 17, "image": true}'),
        {"20": _image("start.png")}, {"image": ["20", 0]},
        "a hot air balloon drifts over green hills", extra_prompts=[(81, "the balloon flies over a lake")]),
    "pusa_i2v_lightx2v": with_preset(workflow(
        "i2v_lightx2v", _task("i2v", 81, strengths="0.8"), {"20": _image("start.png")}, {"image": ["20", 0]},
        "a red kite rises over a windy beach, the camera follows it"), "lightx2v", LIGHTX2V_LORA),
    "pusa_ti2v_5b_i2v": workflow(
        "ti2v_5b_i2v", _task("i2v", 121, strengths="1.0", num_steps=50), {"20": _image("start.png")},
        {"image": ["20", 0]}, "a red kite rises over a windy beach, the camera follows it", ti2v_5b=True),
    "pusa_ti2v_5b_start_end": workflow(
        "ti2v_5b_start_end", _task("start-end", 121, strengths="1.0, 1.0", num_steps=50),
        {"20": _image("first.png"), "21": _image("last.png"),
         "22": {"class_type": "ImageBatch", "inputs": {"image1": ["20", 0], "image2": ["21", 0]}}},
        {"keyframes": ["22", 0]}, "a paper boat drifts across a pond from left to right", ti2v_5b=True),
}


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    for name, nodes in WORKFLOWS.items():
        (HERE / f"{name}.json").write_text(json.dumps(nodes, indent=2) + "\n")


if __name__ == "__main__":
    main()
