"""eval-toy ``--long``: long videos (65 and 129 frames) in the bounce world, schedule by schedule.

Two phases, on `num_seeds` held-out seeds, with the VTA LoRA:

1. every schedule of `pusa_fw_toy.long_schedules` rolls the first length (65 frames) from one image; the
   best one is the schedule that passes the most long-video gates (ties: the higher sum of validity,
   speed-kept share and turn rate);
2. the best schedule then makes every task (rolling from one image, extension from a 3-frame prefix,
   loop) at every length.

Videos come from the same parts as ``pusa-fw generate`` (`pusa_fw_toy.generation.generate_batch`: the
task's plan and holds, `encode_sources`, the core sampling loop with history guidance, the codec), and are
scored frame by frame (`pusa_fw_toy.long_metrics`) against the true bounced clip of the same seed.
Calibration rows (ground truth, and the first frame held still) show what the scores give at the ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pusa_fw.conditioning_media import ConditioningMedia
from pusa_fw.errors import InputError

from pusa_fw_toy.generation import generate_batch
from pusa_fw_toy.long_gates import check_long_gates, gate_score
from pusa_fw_toy.long_metrics import LongScore, score_long_video
from pusa_fw_toy.long_summary import summarise_long
from pusa_fw_toy.long_schedules import LONG_SCHEDULES, task_for
from pusa_fw_toy.world import HELD_OUT_SEED_BASE, WorldClip, render_clip

__all__ = ["LONG_TASKS", "LongEvalConfig", "evaluate_long"]

LONG_TASKS = ("rolling", "extension", "loop")


class LongEvalConfig(BaseModel):
    """What eval-toy ``--long`` runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base: Path = Field(description="toy model directory of the base model (a bounce world)")
    lora: Path = Field(description="the VTA LoRA file")
    num_seeds: int = Field(64, ge=1, le=1_000_000, description="held-out world seeds per row")
    first_seed: int = Field(HELD_OUT_SEED_BASE, ge=0, le=2**62, description="first held-out seed")
    lengths: list[int] = Field(default_factory=lambda: [65, 129], min_length=1, description="video lengths")
    schedules: list[str] = Field(default_factory=lambda: list(LONG_SCHEDULES), min_length=1,
                                 description="schedules compared in phase 1")
    tasks: list[str] = Field(default_factory=lambda: list(LONG_TASKS), min_length=1, description="phase 2 tasks")
    steps: int = Field(20, ge=1, description="sampling steps per window")
    shift: float = Field(2.0, gt=0, description="sigma shift")
    batch_size: int = Field(64, ge=1, description="videos per forward pass")


def _check(config: LongEvalConfig) -> None:
    unknown = [name for name in config.schedules if name not in LONG_SCHEDULES]
    if unknown:
        raise InputError(f"--long-schedule {unknown} is not a long schedule; choose from {list(LONG_SCHEDULES)}")
    wrong = [task for task in config.tasks if task not in LONG_TASKS]
    if wrong:
        raise InputError(f"long task {wrong} is unknown; choose from {list(LONG_TASKS)}")
    if not config.lora.expanduser().is_file():
        raise InputError(f"--lora {str(config.lora)!r} does not exist; --long needs the VTA LoRA file")


def _media(kind: str, clip: WorldClip) -> ConditioningMedia:
    if kind == "extension":
        return ConditioningMedia(keyframes=[clip.video[:, frame] for frame in range(3)])
    return ConditioningMedia(image=clip.video[:, 0])


def evaluate_long(config: LongEvalConfig, *, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run both phases and return the report (rows with per-frame curves, the best schedule, the gates).

    Args:
        config: what to run.
        progress: called with a short label before each batch.

    Raises:
        InputError: unknown schedules or tasks, a missing LoRA, or a base model without walls.
    """
    from pusa_fw.registry_lookup import lookup

    from pusa_fw_toy.model_dir import load_toy_models, merged_with_lora

    _check(config)
    models = load_toy_models(config.base)
    world = models.spec.world
    if world.walls != "bounce":
        raise InputError(f"--base {str(config.base)!r} is a world without walls; --long needs a bounce-world model "
                         "(pusa-fw toy-init --walls bounce)")
    dit = merged_with_lora(models.dit, config.lora)
    seeds = list(range(config.first_seed, config.first_seed + config.num_seeds))
    clips: dict[int, list[WorldClip]] = {}

    def clips_of(length: int) -> list[WorldClip]:
        if length not in clips:
            clips[length] = [render_clip(world, seed, length) for seed in seeds]
        return clips[length]

    def run(kind: str, length: int, name: str) -> dict[str, Any]:
        schedule = LONG_SCHEDULES[name]
        task_name, params = task_for(kind, schedule)
        task = lookup("tasks", task_name)(**params)
        scores: list[LongScore] = []
        truth = clips_of(length)
        started = time.perf_counter()
        for start in range(0, len(truth), config.batch_size):
            if progress is not None:
                progress(f"{kind} {length} / {name}")
            part = truth[start:start + config.batch_size]
            videos = generate_batch(dit, models.codec, models.text_encoder, task, task_name, part, world,
                                    seeds=seeds[start:start + config.batch_size], steps=config.steps,
                                    shift=config.shift, num_frames=length,
                                    history_scale=schedule.history_guidance,
                                    media=[_media(kind, clip) for clip in part])
            scores += [score_long_video(video, clip, world, loop=kind == "loop") for video, clip in zip(videos, part)]
        return {"task": kind, "frames": length, "schedule": name, "seconds": time.perf_counter() - started,
                "model_calls": task.plan(length, config.steps, config.shift, models.codec.geometry).model_calls(),
                **summarise_long(scores, world)}

    first = config.lengths[0]
    rows = [run("rolling", first, name) for name in config.schedules]
    best = max(rows, key=gate_score)["schedule"]
    for kind in config.tasks:
        for length in config.lengths:
            if not (kind == "rolling" and length == first):
                rows.append(run(kind, length, best))
    truth = clips_of(first)
    for label, videos in (("ground truth", [clip.video for clip in truth]),
                          ("static", [clip.video[:, :1].expand_as(clip.video).clone() for clip in truth])):
        scores = [score_long_video(video, clip, world) for video, clip in zip(videos, truth)]
        rows.append({"task": "rolling", "frames": first, "schedule": label, "calibration": True,
                     **summarise_long(scores, world)})
    gates = check_long_gates(rows, best, first)
    return {"settings": config.model_dump(mode="json"), "world": world.model_dump(mode="json"), "rows": rows,
            "best_schedule": best, "generate_args": LONG_SCHEDULES[best].generate_args(), "gates": gates}
