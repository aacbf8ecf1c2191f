"""eval-toy: Pusa's conditioning against replacement, measured in the toy world with the model-free tracker.

For each task (i2v, start-end, extension, t2v) and each method

| method              | model          | held frames                                                   |
|---------------------|----------------|---------------------------------------------------------------|
| base + replacement  | base           | shown re-noised to the generated frames' level every step     |
| base + sigma 0      | base           | clean (sigma 0) while the others are noisy: zero-shot          |
| VTA + sigma 0       | base + LoRA    | clean (sigma 0)                                               |
| VTA + noise 0.2     | base + LoRA    | Pusa's noise multiplier 0.2                                   |
| static              | none           | the given frames copied forward (nothing moves)               |
| ground truth        | none           | the true clip                                                 |

(t2v holds nothing, so its model rows are just ``base`` and ``VTA``) it generates one video per held-out
seed, scores it (`pusa_fw_toy.metrics`) and averages per model; several VTA LoRAs (training seeds) give
a spread. Each row also keeps every video's speed over the truth's (``speed_ratios``, one list per model),
because a mean speed hides whether videos move slowly or some do not move at all. The base model's t2v
row is checked against the quality gates, and the VTA rows against the VTA gates (`pusa_fw_toy.gates`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from pusa_fw.errors import InputError

from pusa_fw_toy.gates import GATES, VTA_GATES, check_gates, check_vta_gates
from pusa_fw_toy.generation import TASK_SETUPS, generate_batch, given_frames, task_params
from pusa_fw_toy.metrics import score_video
from pusa_fw_toy.world import HELD_OUT_SEED_BASE, WorldClip, WorldConfig, render_clip

__all__ = ["EvalConfig", "GATES", "METHODS", "VTA_GATES", "check_gates", "check_vta_gates", "evaluate",
           "expected_rows", "speed_ratios", "summarise"]

METHODS: dict[str, tuple[str, str, float]] = {
    "base + replacement": ("base", "replace", 1.0),
    "base + sigma 0": ("base", "clean", 1.0),
    "VTA + sigma 0": ("vta", "clean", 1.0),
    "VTA + noise 0.2": ("vta", "multiplier", 0.8),
}
"""Method -> (model, conditioning policy, strength) for the tasks that hold frames."""
T2V_METHODS: dict[str, tuple[str, str, float]] = {"base": ("base", "clean", 1.0), "VTA": ("vta", "clean", 1.0)}
CALIBRATION = ("static", "ground truth")
METRICS = ("valid", "error_after_px", "error_generated_px", "fit_within_1px", "fit_px", "speed",
           "speed_ratio", "direction_acc", "psnr_given_db")


class EvalConfig(BaseModel):
    """What eval-toy runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base: Path = Field(description="toy model directory of the base model")
    loras: list[Path] = Field(default_factory=list, description="VTA LoRA files, one per training seed")
    num_seeds: int = Field(128, ge=1, le=1_000_000, description="held-out world seeds per task")
    first_seed: int = Field(HELD_OUT_SEED_BASE, ge=0, le=2**62, description="first held-out seed")
    tasks: list[str] = Field(default_factory=lambda: list(TASK_SETUPS), min_length=1, description="tasks")
    steps: int = Field(20, ge=1, description="sampling steps")
    shift: float = Field(2.0, gt=0, description="sigma shift")
    cfg: float = Field(1.0, ge=0, description="text guidance scale (1 = off)")
    sampler: str = Field("euler", description="registered sampler")
    batch_size: int = Field(32, ge=1, description="videos per forward pass")
    cache: str = Field("none", description="step cache every model row samples with (see `pusa-fw plugins`)")
    cache_params: dict[str, Any] = Field(default_factory=dict, description="the cache's parameters")
    methods: list[str] | None = Field(None, description="model rows to run (default: all); calibration rows "
                                      "always run")


def expected_rows(tasks: Sequence[str], with_vta: bool) -> list[tuple[str, str]]:
    """The ``(task, method)`` rows a run produces, in table order."""
    rows = []
    for task in tasks:
        methods = METHODS if TASK_SETUPS[task].held else T2V_METHODS
        rows += [(task, method) for method, (model, _, _) in methods.items() if with_vta or model == "base"]
        rows += [(task, method) for method in CALIBRATION]
    return rows


def _static(clip: WorldClip, given: Sequence[int]) -> torch.Tensor:
    """Each frame a copy of the nearest given frame (frame 0 when nothing is given)."""
    anchors = list(given) or [0]
    frames = [min(anchors, key=lambda anchor: (abs(anchor - t), anchor)) for t in range(clip.video.shape[1])]
    return clip.video[:, frames].clone()


def _aggregate(scores: list[dict[str, Any]], world: WorldConfig) -> dict[str, float]:
    """Average one model's per-video scores into the row metrics."""

    def mean(key: str) -> float:
        values = [score[key] for score in scores if math.isfinite(score[key])]
        return sum(values) / len(values) if values else float("nan")

    fits = [score["fit_px"] for score in scores]
    finite_fits = sorted(value for value in fits if math.isfinite(value))
    return {
        "valid": mean("valid"),
        "error_after_px": mean("error_after_px"),
        "error_generated_px": mean("error_generated_px"),
        "fit_within_1px": sum(1 for value in fits if math.isfinite(value) and value <= 1.0) / len(fits),
        "fit_px": finite_fits[len(finite_fits) // 2] if finite_fits else float("nan"),
        "speed": mean("speed"),
        "speed_ratio": mean("speed") / world.speed if world.speed else float("nan"),
        "direction_acc": mean("direction_ok"),
        "psnr_given_db": mean("psnr_given_db"),
    }


def speed_ratios(scores: list[dict[str, Any]], world: WorldConfig) -> list[float | None]:
    """Each video's fitted speed over the world's (None where no path was fitted, or the world is still)."""
    return [score["speed"] / world.speed if world.speed and math.isfinite(score["speed"]) else None
            for score in scores]


def summarise(per_model: list[dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Mean, min and max of each metric over the models (training seeds) of a row."""
    summary = {}
    for metric in METRICS:
        values = [row[metric] for row in per_model]
        finite = [value for value in values if math.isfinite(value)]
        summary[metric] = {
            "mean": sum(finite) / len(finite) if finite else None,
            "min": min(finite) if finite else None,
            "max": max(finite) if finite else None,
            "per_model": [value if math.isfinite(value) else None for value in values],
        }
    return summary


def _load(config: EvalConfig) -> tuple[Any, list[Any], Any]:
    from pusa_fw_toy.model_dir import load_toy_models, merged_with_lora

    base = load_toy_models(config.base)
    vtas = [merged_with_lora(base.dit, path) for path in config.loras]
    return base, vtas, base.spec.world


def evaluate(config: EvalConfig, *, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every row and return the report (rows, gates, settings); see the module docstring.

    Args:
        config: what to run.
        progress: called with a short label before each batch (the CLI hooks a tqdm bar here).

    Raises:
        InputError: unknown tasks or missing files.
        ValidationError: bad cache parameters (UnknownComponentError: unknown cache).

    With a cache (``config.cache``), every model row samples through it and records the DiT work done
    (``row["work"]``: token-block and FLOP fractions of no cache); framecache needs a DiT with
    ``velocity_partial``.
    """
    from pusa_fw.api import get_cache
    from pusa_fw.caches import CachedBackbone, WorkStats
    from pusa_fw.registry_lookup import lookup

    unknown = [task for task in config.tasks if task not in TASK_SETUPS]
    if unknown:
        raise InputError(f"--task {unknown} has no toy setup; choose from {', '.join(TASK_SETUPS)}")
    cache = get_cache(config.cache, **config.cache_params)
    base, vtas, world = _load(config)
    models = {"base": [base.dit], "vta": vtas}
    geometry = base.codec.geometry
    seeds = list(range(config.first_seed, config.first_seed + config.num_seeds))
    clips = [render_clip(world, seed) for seed in seeds]
    rows = []
    for task_name in config.tasks:
        setup = TASK_SETUPS[task_name]
        given = given_frames(task_name, world, geometry)
        reference = "truth" if setup.held else "heading"
        methods = METHODS if setup.held else T2V_METHODS
        for method, (model_kind, policy, strength) in methods.items():
            if not models[model_kind] or (config.methods is not None and method not in config.methods):
                continue
            task = lookup("tasks", task_name)(**task_params(task_name, policy, strength, world, geometry))
            per_model, per_video, work = [], [], WorkStats()
            for dit in models[model_kind]:
                scores = []
                model = CachedBackbone(dit, cache, work=work)  # `none`: the plain loop's results, work counted
                for start in range(0, len(clips), config.batch_size):
                    if progress is not None:
                        progress(f"{task_name} / {method}")
                    part = clips[start:start + config.batch_size]
                    videos = generate_batch(model, base.codec, base.text_encoder, task, task_name, part, world,
                                            seeds=seeds[start:start + config.batch_size], steps=config.steps,
                                            shift=config.shift, cfg=config.cfg, sampler=config.sampler)
                    scores += [score_video(video, clip, world, given, reference=reference)
                               for video, clip in zip(videos, part)]
                per_model.append(_aggregate(scores, world))
                per_video.append(speed_ratios(scores, world))
            rows.append({"task": task_name, "method": method, "models": len(per_model),
                         "metrics": summarise(per_model), "speed_ratios": per_video, "work": work.summary()})
        for method in CALIBRATION:
            videos = [clip.video if method == "ground truth" else _static(clip, given) for clip in clips]
            scores = [score_video(video, clip, world, given, reference=reference)
                      for video, clip in zip(videos, clips)]
            rows.append({"task": task_name, "method": method, "models": 1,
                         "metrics": summarise([_aggregate(scores, world)]),
                         "speed_ratios": [speed_ratios(scores, world)]})
    return {"settings": config.model_dump(mode="json"), "world": world.model_dump(mode="json"),
            "rows": rows, "gates": check_gates(rows), "vta_gates": check_vta_gates(rows)}

