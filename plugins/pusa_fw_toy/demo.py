"""`make demo`: the toy model trained here, conditioned four ways through ``pusa-fw generate``.

The shipped base model plus its VTA LoRA (`pusa_fw_toy.shipped`) runs image-to-video from a bundled image,
start-end keyframes, an extension of a bundled clip, and a 65-frame rolling video from one image with the
long-video settings the manifest recommends (``long_video.generate_args``), each through exactly the
command a user types. For each task the demo draws the plan (``plan_<task>.txt`` and ``.png``), writes the
mp4 with its JSON sidecar and a contact sheet enlarged 8x (``.png``), and prints what the model-free tracker
reads in the result: which way and how fast the square moves, and for the long video whether it turned
back at the walls and kept its speed.

    python -m pusa_fw_toy.demo outputs
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from einops import repeat

__all__ = ["ASSETS", "DEMO_RUNS", "DemoRun", "main", "render_assets"]

ASSETS = Path(__file__).resolve().parent / "assets"
SHEET_SCALE = 8
NUM_STEPS = 20
SHIFT = 2.0
POLICY = "multiplier"
"""How the given frames are held: Pusa's noise multiplier, 0.2 at strength 0.8 (the best row of the
README's eval-toy table for every conditioned task)."""
POLICY_PARAMS: dict[str, Any] = {}
LONG_FRAMES = 65
SHEET_COLUMNS = 13
DEMO_WORLD_WALLS = "bounce"
"""The shipped model's world: the square bounces off the edges at 1 px/frame (its ``toy.json``)."""


@dataclass(frozen=True)
class DemoRun:
    """One demo generation.

    Attributes:
        task: registered task name.
        seed: held-out world seed whose frames the bundled media show.
        caption: the prompt (the world's caption of that seed).
        media: generate flags naming the bundled media (``{assets}`` is the assets folder).
        params: task parameters (also used to draw the plan).
        given: pixel frames the model is given.
        num_frames: video length (a rolling run takes its window settings from the manifest).
    """

    task: str
    seed: int
    caption: str
    media: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    given: list[int] = field(default_factory=list)
    num_frames: int = 9


def demo_world() -> Any:
    """The world of the demo's media and truth (the shipped model's, with walls)."""
    from pusa_fw_toy.world import WorldConfig

    return WorldConfig(walls=DEMO_WORLD_WALLS)


DEMO_RUNS = [
    DemoRun("i2v", 1_900_000_012, "a red square", ["--image", "{assets}/i2v_first.png"],
            params={"strength": 0.8}, given=[0]),
    DemoRun("start-end", 1_900_000_001, "a green square",
            ["--keyframe", "0:{assets}/start_end_first.png", "--keyframe", "8:{assets}/start_end_last.png"],
            params={"strengths": [0.8, 0.8]}, given=[0, 8]),
    DemoRun("extension", 1_900_000_019, "a blue square", ["--video", "{assets}/extension_clip.mp4"],
            params={"given_frames": 3, "strengths": [0.8]}, given=[0, 1, 2]),
    DemoRun("rolling", 1_900_000_007, "a blue square", ["--image", "{assets}/rolling_first.png"],
            given=[0], num_frames=LONG_FRAMES),
]
"""The four demo runs; `render_assets` writes their media from the world seeds."""


def long_video_args() -> list[str]:
    """The recommended ``generate --task rolling`` arguments from the shipped manifest (``long_video``)."""
    from pusa_fw.errors import InputError

    from pusa_fw_toy.shipped import read_manifest

    record = read_manifest().get("long_video")
    if record is None:
        raise InputError("the shipped MANIFEST.json has no long_video record; rerun the long stage of "
                         "plugins/pusa_fw_toy/recipes/reproduce.sh")
    return list(record["generate_args"])


def render_assets(folder: Path) -> list[Path]:
    """Render the bundled media of `DEMO_RUNS` from their world seeds into `folder` (how ASSETS was made)."""
    from pusa_fw.io.image import save_image
    from pusa_fw.io.video import save_video

    from pusa_fw_toy.world import render_clip

    world = demo_world()
    clips = {run.task: render_clip(world, run.seed, run.num_frames) for run in DEMO_RUNS}
    for run in DEMO_RUNS:
        if run.caption != clips[run.task].caption:
            raise ValueError(f"demo run {run.task}: caption {run.caption!r} is not the world's "
                             f"{clips[run.task].caption!r} for seed {run.seed}")
    folder.mkdir(parents=True, exist_ok=True)
    return [
        save_image(folder / "i2v_first.png", clips["i2v"].video[:, 0]),
        save_image(folder / "start_end_first.png", clips["start-end"].video[:, 0]),
        save_image(folder / "start_end_last.png", clips["start-end"].video[:, -1]),
        save_video(folder / "extension_clip.mp4", clips["extension"].video[:, :3], fps=8, lossless=True),
        save_image(folder / "rolling_first.png", clips["rolling"].video[:, 0]),
    ]


def draw_plans(folder: Path, policy: str, policy_params: dict[str, Any]) -> None:
    """Print each demo task's plan and write ``plan_<task>.txt`` and ``.png`` into `folder`."""
    from pusa_fw import get_task
    from pusa_fw.io.atomic import atomic_write_bytes

    from pusa_fw_toy.codec import ToyCodecConfig

    geometry = ToyCodecConfig().geometry()
    for run in DEMO_RUNS:
        if run.task == "rolling":
            plan = get_task("rolling", image=True, **_rolling_params()).plan(run.num_frames, NUM_STEPS, SHIFT, geometry)
        else:
            plan = get_task(run.task, **run.params, policy=policy, policy_params=policy_params).plan(
                run.num_frames, NUM_STEPS, SHIFT, geometry)
        table = plan.table()
        print(table, end="\n\n")
        atomic_write_bytes(folder / f"plan_{run.task}.txt", (table + "\n").encode())
        plan.save_heatmap(folder / f"plan_{run.task}.png")


def _rolling_params() -> dict[str, Any]:
    """The rolling task parameters of the manifest's best long-video schedule (what its arguments spell)."""
    from pusa_fw_toy.long_schedules import LONG_SCHEDULES, task_for
    from pusa_fw_toy.shipped import read_manifest

    long_video_args()  # the one clear error when the manifest has no long_video record
    _, params = task_for("rolling", LONG_SCHEDULES[read_manifest()["long_video"]["best_schedule"]])
    return {key: value for key, value in params.items() if key != "image"}


def describe_long(video: torch.Tensor, run: DemoRun) -> str:
    """What the tracker reads in a long `[3, T, H, W]` video: valid frames, wall turns and speed kept."""
    from pusa_fw_toy.long_metrics import score_long_video
    from pusa_fw_toy.long_summary import SPEED_BAND
    from pusa_fw_toy.world import render_clip

    world = demo_world()
    score = score_long_video(video, render_clip(world, run.seed, video.shape[1]), world)
    speeds = score.segment_speed
    kept = int(((speeds >= SPEED_BAND[0] * world.speed) & (speeds <= SPEED_BAND[1] * world.speed)).sum())
    turned = (f"it turned back at {score.turned} of {score.contacts} wall contacts"
              f"{' (every one)' if score.turned == score.contacts else ''}")
    return (f"{int(score.valid.sum())}/{video.shape[1]} frames show the square; {turned}; its speed stayed "
            f"{SPEED_BAND[0]:g}-{SPEED_BAND[1]:g} px/frame in {kept} of {len(speeds)} 8-frame segments "
            f"(medians {', '.join(f'{value:.2f}' for value in speeds.tolist())})")


def describe(video: torch.Tensor, run: DemoRun) -> str:
    """What the tracker reads in a generated `[3, T, H, W]` video, in one line, ending with whether the
    square moves the way its given frames point (the world clip they were cut from)."""
    from pusa_fw_toy.metrics import score_video, shown_heading
    from pusa_fw_toy.tracker import track_video
    from pusa_fw_toy.world import render_clip

    world = demo_world()
    truth = render_clip(world, run.seed, run.num_frames)
    track = track_video(video, world)
    score = score_video(video, truth, world, run.given)
    return (f"{int(track.valid.sum())}/{video.shape[1]} frames show the square; it faces "
            f"{shown_heading(track) or 'unreadable'} and moves {score['direction'] or 'nowhere'} at "
            f"{score['speed']:.2f} px/frame (the world's speed: {world.speed:g}; straight-line residual "
            f"{score['fit_px']:.2f} px); its given frames point {truth.direction}: "
            f"{'it follows them' if score['direction'] == truth.direction else 'it does NOT follow them'}")


def _flag_value(value: Any) -> str:
    """A task parameter as the CLI takes it (lists comma-separated)."""
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def generate_videos(folder: Path, policy: str, policy_params: dict[str, Any]) -> None:
    """Run ``pusa-fw generate`` for each demo run on the shipped model; write mp4, sidecar and sheet."""
    from pusa_fw.cli import main as cli
    from pusa_fw.io import read_video
    from pusa_fw.io.image import save_contact_sheet
    from pusa_fw.io.pixels import uint8_to_video

    from pusa_fw_toy.shipped import shipped_lora, shipped_model_dir

    common = ["--model", str(shipped_model_dir()), "--lora", str(shipped_lora(0)),
              "--height", "16", "--width", "16", "--num-steps", str(NUM_STEPS), "--shift", str(SHIFT),
              "--cfg", "1", "--fps", "8", "--seed", "0"]
    held = ["--policy", policy] + (["--policy-params", json.dumps(policy_params)] if policy_params else [])
    for run in DEMO_RUNS:
        video_path = folder / f"demo_{run.task.replace('-', '_')}.mp4"
        media = [item.format(assets=ASSETS) for item in run.media]
        params = [flag for key, value in run.params.items()
                  for flag in (f"--{key.replace('_', '-')}", _flag_value(value))]
        settings = long_video_args() if run.task == "rolling" else held
        code = cli(["generate", *common, "--num-frames", str(run.num_frames), *settings, "--task", run.task,
                    "--prompt", run.caption, *media, *params, "--out", str(video_path)])
        if code != 0:
            raise SystemExit(code)
        video = uint8_to_video(read_video(video_path).frames)
        big = repeat(video, "c t h w -> c t (h a) (w b)", a=SHEET_SCALE, b=SHEET_SCALE)
        sheet = save_contact_sheet(video_path.with_suffix(".png"), big, columns=min(video.shape[1], SHEET_COLUMNS),
                                   padding=4, background=(128, 128, 128))
        line = describe_long(video, run) if run.task == "rolling" else describe(video, run)
        print(f"{run.task}: given frames {run.given} of {run.caption!r}; {line}")
        print(f"wrote {video_path} (+ .json sidecar, {sheet.name} contact sheet)\n")


def main(argv: list[str] | None = None) -> int:
    """Draw the plans and generate the demo videos into the folder given (default ``outputs``)."""
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0] if args else "outputs")
    folder.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    draw_plans(folder, POLICY, POLICY_PARAMS)
    generate_videos(folder, POLICY, POLICY_PARAMS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
