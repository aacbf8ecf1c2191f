"""One ``pusa-fw generate`` run from a validated `GenerateConfig`: check, load, generate, write.

Everything that can be checked before a model is loaded is checked first (task parameters, keyframe
positions, input files, the output path), so a bad value costs no loading time. The mp4 and its sidecar
JSON are written atomically at the very end: a failed run leaves no output file behind.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pusa_fw.cli_params import one_line_validation_error
from pusa_fw.errors import InputError
from pusa_fw.geometry import WAN21_GEOMETRY, LatentGeometry
from pusa_fw.io.atomic import atomic_path, check_output_path
from pusa_fw.registry_lookup import lookup
from pusa_fw.task import Hold, Task

from pusa_fw_wan.pipeline.media import check_media, load_media
from pusa_fw_wan.cli.generate_config import GenerateConfig, build_cache
from pusa_fw_wan.cli.generate_parallel import check_parallel_run, parallel_layout, sharded_dit
from pusa_fw_wan.text.prompts import WAN_DEFAULT_NEGATIVE_PROMPT
from pusa_fw_wan.pipeline.wan import GenerationResult, WanPipeline
from pusa_fw_wan.pipeline.sidecar import describe_files, sidecar_bytes, sidecar_path

__all__ = ["GenerateOutcome", "build_task", "run_generate"]

INPUT_FLAGS = {"image": "--image PATH", "keyframe": "--keyframe FRAME:PATH", "video": "--video PATH",
               "video_b": "--video-b PATH"}
_POSITION_FIELDS = ("positions", "keyframes")
_STRENGTH_FIELDS = ("keyframe_strengths", "strengths")


@dataclass
class GenerateOutcome:
    """A finished run: where the files are, the pipeline result and the time split (seconds).

    Under torchrun only rank 0 writes; on the other ranks the paths are None.
    """

    video_path: Path | None
    sidecar_path: Path | None
    result: GenerationResult
    timings: dict[str, float]


def _task_error(task_name: str, error: ValidationError) -> InputError:
    return InputError(f"task {task_name!r}: {one_line_validation_error(error, as_options=True)}")


def build_task(config: GenerateConfig) -> Task:
    """The task of `config`, with ``--keyframe`` positions/strengths and ``--image`` mapped into its params.

    Raises:
        InputError: an unknown or invalid parameter, or a keyframe setting given twice.
    """
    task_cls = lookup("tasks", config.task)
    fields = getattr(task_cls, "model_fields", {})
    params: dict[str, Any] = dict(config.task_params)
    if config.keyframe:
        position_field = next((name for name in _POSITION_FIELDS if name in fields), None)
        strength_field = next((name for name in _STRENGTH_FIELDS if name in fields), None)
        if position_field is not None:
            if position_field in params:
                raise InputError(
                    "keyframe positions are given twice: by --keyframe and by the task parameter "
                    f"{position_field}; use one of them"
                )
            params[position_field] = [keyframe.frame for keyframe in config.keyframe]
        strengths = [keyframe.strength for keyframe in config.keyframe]
        if any(value is not None for value in strengths):
            if any(value is None for value in strengths):
                raise InputError("give a strength to every --keyframe (FRAME:PATH:STRENGTH) or to none")
            if strength_field is None:
                raise InputError(f"task {config.task!r} takes no keyframe strengths; drop the :STRENGTH")
            if strength_field in params:
                raise InputError(f"keyframe strengths are given twice: by --keyframe and by {strength_field}")
            params[strength_field] = strengths
    image_field = fields.get("image")
    if config.image is not None and image_field is not None and image_field.annotation is bool:
        if params.get("image") is False:
            raise InputError(f"--image is given but task {config.task!r} has image=false; drop one of them")
        params["image"] = True
    try:
        return task_cls.model_validate(params)
    except ValidationError as error:
        raise _task_error(config.task, error) from error


def _check_keyframe_positions(config: GenerateConfig, holds: list[Hold],
                              geometry: LatentGeometry = WAN21_GEOMETRY) -> None:
    """Every keyframe must land in the latent frame where the task holds it."""
    for hold in holds:
        if not hold.source.startswith("keyframe:"):
            continue
        index = int(hold.source.split(":")[1])
        if index >= len(config.keyframe):
            continue  # reported as a missing input by check_media
        keyframe = config.keyframe[index]
        if geometry.latent_index(keyframe.frame, config.num_frames) != hold.frame:
            span = geometry.pixel_span(hold.frame)
            raise InputError(
                f"--keyframe {keyframe.frame}:{keyframe.path} is keyframe {index}; task {config.task!r} "
                f"holds it in latent frame {hold.frame} (pixel frames {span.start}..{span.stop - 1}); "
                f"move it there (start-end: frames 0 and {config.num_frames - 1})"
            )


def _check_files(config: GenerateConfig) -> None:
    inputs = [("--image", config.image), ("--video", config.video), ("--video-b", config.video_b)]
    inputs += [("--keyframe", keyframe.path) for keyframe in config.keyframe]
    for flag, path in inputs:
        if path is not None and not path.expanduser().is_file():
            raise InputError(f"{flag} {str(path)!r} does not exist; check the path")


def _check_output(path: Path) -> Path:
    if path.suffix.lower() != ".mp4":
        raise InputError(f"--out {str(path)!r} must end in .mp4 (e.g. --out {path.with_suffix('.mp4')})")
    check_output_path(path)
    return check_output_path(sidecar_path(path))


def _check_latents_path(path: Path | None) -> None:
    if path is None:
        return
    if path.suffix.lower() != ".safetensors":
        example = path.with_suffix(".safetensors")
        raise InputError(f"--save-latents {str(path)!r} must end in .safetensors (e.g. {str(example)!r})")
    try:
        check_output_path(path)
    except InputError as error:
        raise InputError(f"--save-latents: {error}") from None


def _check_plan_png_path(path: Path | None) -> None:
    if path is None:
        return
    if path.suffix.lower() != ".png":
        raise InputError(f"--plan-png {str(path)!r} must end in .png (e.g. {str(path.with_suffix('.png'))!r})")
    try:
        check_output_path(path)
    except InputError as error:
        raise InputError(f"--plan-png: {error}") from None


def run_generate(config: GenerateConfig, *, progress: bool = False) -> GenerateOutcome:
    """Check everything, load the models, generate, and write the mp4 and its sidecar atomically.

    Raises:
        PusaError: any bad input (one-line messages naming the value and the fix).
    """
    from pusa_fw_wan.pipeline.loading import (
        model_geometry, resolve_device, resolve_dtype, resolve_model_paths,
    )

    from pusa_fw_wan.cli.generate_defaults import with_model_defaults

    started = time.perf_counter()
    config = with_model_defaults(config)  # e.g. TI2V-5B: its official settings where the run set none
    layout = parallel_layout(config)
    task = build_task(config)
    build_cache(config)  # unknown cache or bad --cache-params: fail before any file is read
    paths = resolve_model_paths(config.model, config.vae, config.text_encoder, config.tokenizer)
    geometry = model_geometry(paths)  # the codec's frame map, before any weights are read
    geometry.num_latent_frames(config.num_frames)
    geometry.check_spatial_size(config.height, config.width)
    plan = task.plan(config.num_frames, config.num_steps, config.shift, geometry)  # bad params fail here
    holds = task.holds(config.num_frames, config.num_steps, geometry)
    given = {"image": config.image is not None, "video": config.video is not None,
             "video_b": config.video_b is not None}
    given.update({f"keyframe:{k}": True for k in range(len(config.keyframe))})
    check_media(holds, given, config.task, INPUT_FLAGS)
    _check_keyframe_positions(config, holds, geometry)
    _check_files(config)
    out = config.output_path()
    sidecar = _check_output(out)
    _check_latents_path(config.save_latents)
    _check_plan_png_path(config.plan_png)
    lookup("samplers", config.sampler)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    if layout is not None:
        check_parallel_run(layout, config, plan, paths.dit)
    media = load_media(
        holds, image=config.image, keyframes=[k.path for k in config.keyframe],
        video=config.video, video_b=config.video_b, size=(config.height, config.width), fps=config.fps,
        policy=config.resize, geometry=geometry,
    )
    loras = [(lora.path, lora.strength) for lora in config.lora]
    if layout is None:
        return _generate(config, task, media, paths, loras, device, dtype, out, sidecar, None, started,
                         progress)
    from pusa_fw_wan.parallel.runtime import init_parallel

    runtime = init_parallel(layout, device)
    try:
        return _generate(config, task, media, paths, loras, runtime.device, dtype, out, sidecar, runtime,
                         started, progress and runtime.is_main)
    finally:
        runtime.close()


def _generate(config: GenerateConfig, task: Task, media: Any, paths: Any, loras: list[tuple[Path, float]],
              device: Any, dtype: Any, out: Path, sidecar: Path, runtime: Any, started: float,
              progress: bool) -> GenerateOutcome:
    """Load, (parallelise,) generate and write; with a runtime only its rank 0 decodes and writes."""
    import torch

    from pusa_fw_wan.pipeline.loading import load_models

    layout = None if runtime is None else runtime.layout
    sharded = layout is not None and (layout.fsdp or layout.fsdp_text)
    # A sharded text encoder gathers its weights with collectives: no rank may skip it on a cache hit.
    # --fsdp: this rank's shards only, the LoRAs merged into its rows
    preloaded = sharded_dit(config, paths, loras, runtime, dtype)
    models = load_models(paths, loras=loras, dtype=dtype, device=torch.device("cpu") if sharded else device,
                         offload=config.offload, weights_dtype=config.weights_dtype,
                         prompt_cache=config.prompt_cache and not (layout is not None and layout.fsdp_text),
                         dit=None if preloaded is None else preloaded[0],
                         dit_lora_report=None if preloaded is None else preloaded[1].lora_report)
    dit = models.dit
    if runtime is not None:
        from pusa_fw_wan.parallel.runtime import parallelize_backbone, parallelize_text_encoder

        dit = parallelize_backbone(dit.requires_grad_(False), runtime)
        parallelize_text_encoder(models.text_encoder, runtime)
    writes = runtime is None or runtime.is_main
    pipeline = WanPipeline(dit, models.vae, models.text_encoder, device=device, offload=config.offload)
    cache, work = build_cache(config), None
    if cache.name != "none":  # the loop unpacks the binding; a cache that needs velocity_partial checks it here
        from pusa_fw.caches import CachedBackbone, WorkStats

        work = WorkStats()
        pipeline.dit = CachedBackbone(dit, cache, work=work)
    timings = {"load": time.perf_counter() - started}
    result = pipeline.generate(
        task, prompt=config.prompt, negative_prompt=config.negative_prompt,
        prompts_at=[(entry.frame, entry.text) for entry in config.prompt_at], media=media,
        num_frames=config.num_frames, height=config.height, width=config.width, num_steps=config.num_steps,
        shift=config.shift, guidance=config.guidance(), sampler=config.sampler,
        seed=config.seed, keyframe_encoding=config.keyframe_encoding, progress=progress, decode=writes,
    )
    timings.update(result.timings)
    if not writes:
        return GenerateOutcome(video_path=None, sidecar_path=None, result=result, timings=timings)
    write_started = time.perf_counter()
    record = _sidecar_record(config, task, result, paths, models, str(device))
    record["cache"] = {"name": cache.name, "params": cache.model_dump(mode="json"),
                       "work": None if work is None else work.summary()}
    if runtime is not None:
        record["parallel"] = runtime.layout.describe(runtime.world_size)
    _write_outputs(out, sidecar, result, config.fps, record, timings)
    if config.save_latents is not None:
        from pusa_fw_wan.weights import write_tensor_file

        write_tensor_file(config.save_latents, {"latents": result.latents},
                          {"format": "pusa_fw.latents.v1", "seed": str(result.seed)})
    if config.plan_png is not None:
        result.plan.save_heatmap(str(config.plan_png))
    timings["write"] = time.perf_counter() - write_started
    return GenerateOutcome(video_path=out, sidecar_path=sidecar, result=result, timings=timings)


def _write_outputs(out: Path, sidecar: Path, result: GenerationResult, fps: int, record: dict[str, Any],
                   timings: dict[str, float]) -> None:
    from pusa_fw.io.video import save_video

    with atomic_path(sidecar) as sidecar_temp, atomic_path(out) as video_temp:
        save_video(video_temp, result.video, fps=fps)
        sidecar_temp.write_bytes(sidecar_bytes({**record, "timings": dict(timings)}))


def _dit_files(path: Path) -> list[Path] | None:
    """The files the DiT loader reads (weights and config.json) when `path` is a directory."""
    if not path.is_dir():
        return None
    from pusa_fw_wan.dit.checkpoint import find_checkpoint_files

    found = find_checkpoint_files(path)
    return found.weight_files + ([found.config_file] if found.config_file is not None else [])


def _sidecar_record(config: GenerateConfig, task: Task, result: GenerationResult, paths: Any, models: Any,
                    device: str) -> dict[str, Any]:
    from pusa_fw_wan.dit.storage import describe_storage

    inputs = {
        "image": describe_files(config.image),
        "keyframes": [{"frame": k.frame, "strength": k.strength, **(describe_files(k.path) or {})}
                      for k in config.keyframe],
        "video": describe_files(config.video),
        "video_b": describe_files(config.video_b),
    }
    loras = [{"strength": lora.strength, **(describe_files(lora.path) or {})} for lora in config.lora]
    video = result.video
    return {
        "output": {"frames": int(video.shape[1]), "height": int(video.shape[2]), "width": int(video.shape[3]),
                   "fps": config.fps},
        "seed": config.seed,
        "task": task.describe(),
        "plan": result.plan.summary(),
        "clean_held_frames": result.clean_frames,
        "prompt": config.prompt,
        "prompt_at": [entry.model_dump() for entry in config.prompt_at],
        "negative_prompt": (config.negative_prompt if config.negative_prompt is not None
                            else WAN_DEFAULT_NEGATIVE_PROMPT) if config.cfg != 1 else None,
        "sampling": {"preset": config.preset, "sampler": config.sampler, "num_steps": config.num_steps,
                     "shift": config.shift, "cfg": config.cfg, "history_guidance": config.history_guidance},
        "inputs": inputs,
        "models": {
            "dit": describe_files(paths.dit, _dit_files(paths.dit)), "vae": describe_files(paths.vae),
            "text_encoder": describe_files(paths.text_encoder), "tokenizer": describe_files(paths.tokenizer),
        },
        "loras": loras,
        "runtime": {"device": device, "dtype": str(models.dtype).replace("torch.", ""),
                    "weights_dtype": describe_storage(models.dit)["weights_dtype"],
                    "offload": config.offload,
                    "lora_merged": bool(models.lora_report and models.lora_report.merged)},
        "config": config.model_dump(mode="json"),
    }
