"""`make demo`: the toy model trained here, conditioned three ways through ``pusa-fw generate``.

The shipped base model plus its VTA LoRA (`pusa_fw_toy.shipped`) runs image-to-video from a bundled image,
start-end keyframes and an extension of a bundled clip, each through exactly the command a user types.
For each task the demo draws the plan (``plan_<task>.txt`` and ``.png``), writes the mp4 with its JSON
sidecar and a contact sheet enlarged 8x (``.png``), and prints what the model-free tracker reads in the
result: where the square starts, which way and how fast it moves.

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
    """

    task: str
    seed: int
    caption: str
    media: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    given: list[int] = field(default_factory=list)


DEMO_RUNS = [
    DemoRun("i2v", 1_900_000_012, "a red square", ["--image", "{assets}/i2v_first.png"],
            params={"strength": 0.8}, given=[0]),
    DemoRun("start-end", 1_900_000_001, "a green square",
            ["--keyframe", "0:{assets}/start_end_first.png", "--keyframe", "8:{assets}/start_end_last.png"],
            params={"strengths": [0.8, 0.8]}, given=[0, 8]),
    DemoRun("extension", 1_900_000_019, "a blue square", ["--video", "{assets}/extension_clip.mp4"],
            params={"given_frames": 3, "strengths": [0.8]}, given=[0, 1, 2]),
]
"""The three demo runs; `render_assets` writes their media from the world seeds."""


def render_assets(folder: Path) -> list[Path]:
    """Render the bundled media of `DEMO_RUNS` from their world seeds into `folder` (how ASSETS was made)."""
    from pusa_fw.io.image import save_image
    from pusa_fw.io.video import save_video

    from pusa_fw_toy.world import WorldConfig, render_clip

    world = WorldConfig()
    clips = {run.task: render_clip(world, run.seed) for run in DEMO_RUNS}
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
    ]


def draw_plans(folder: Path, policy: str, policy_params: dict[str, Any]) -> None:
    """Print each demo task's plan and write ``plan_<task>.txt`` and ``.png`` into `folder`."""
    from pusa_fw import get_task
    from pusa_fw.io.atomic import atomic_write_bytes

    from pusa_fw_toy.codec import ToyCodecConfig

    geometry = ToyCodecConfig().geometry()
    for run in DEMO_RUNS:
        plan = get_task(run.task, **run.params, policy=policy, policy_params=policy_params).plan(9, NUM_STEPS, SHIFT, geometry)
        table = plan.table()
        print(table, end="\n\n")
        atomic_write_bytes(folder / f"plan_{run.task}.txt", (table + "\n").encode())
        plan.save_heatmap(folder / f"plan_{run.task}.png")


def describe(video: torch.Tensor, run: DemoRun) -> str:
    """What the tracker reads in a generated `[3, T, H, W]` video, in one line, ending with whether the
    square moves the way its given frames point (the world clip they were cut from)."""
    from pusa_fw_toy.metrics import score_video, shown_heading
    from pusa_fw_toy.tracker import track_video
    from pusa_fw_toy.world import WorldConfig, render_clip

    world = WorldConfig()
    truth = render_clip(world, run.seed)
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

    common = ["--model", str(shipped_model_dir()), "--lora", str(shipped_lora(0)), "--num-frames", "9",
              "--height", "16", "--width", "16", "--num-steps", str(NUM_STEPS), "--shift", str(SHIFT),
              "--cfg", "1", "--fps", "8", "--seed", "0", "--policy", policy]
    if policy_params:
        common += ["--policy-params", json.dumps(policy_params)]
    for run in DEMO_RUNS:
        video_path = folder / f"demo_{run.task.replace('-', '_')}.mp4"
        media = [item.format(assets=ASSETS) for item in run.media]
        params = [flag for key, value in run.params.items()
                  for flag in (f"--{key.replace('_', '-')}", _flag_value(value))]
        code = cli(["generate", *common, "--task", run.task, "--prompt", run.caption, *media, *params,
                    "--out", str(video_path)])
        if code != 0:
            raise SystemExit(code)
        video = uint8_to_video(read_video(video_path).frames)
        big = repeat(video, "c t h w -> c t (h a) (w b)", a=SHEET_SCALE, b=SHEET_SCALE)
        sheet = save_contact_sheet(video_path.with_suffix(".png"), big, columns=video.shape[1], padding=4,
                                   background=(128, 128, 128))
        print(f"{run.task}: given frames {run.given} of {run.caption!r}; {describe(video, run)}")
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
