"""`make demo`: draw the i2v, keyframes and rolling plans, then generate videos end to end.

Without downloadable weights the generation runs on a tiny random-weight Wan2.1 set built on the fly
(`pusa_fw_wan.testing.tiny`), through exactly the path real checkpoints take: ``pusa-fw generate``. With real
weights, pass ``--model`` (and the other generate flags) to ``pusa-fw generate`` yourself.

    python -m pusa_fw_wan.demo outputs
"""

from __future__ import annotations

import sys
from pathlib import Path

from pusa_fw import get_task
from pusa_fw.io.atomic import atomic_write_bytes

DEMO_PLANS = [
    ("i2v", {"strength": 0.8}, 81, 10),
    ("keyframes", {"positions": [0, 40, 80], "strengths": [1.0, 0.6, 0.8]}, 81, 10),
    ("rolling", {"window": 81, "overlap": 17, "schedule": "pyramid",
                 "schedule_params": {"ar_step": 2, "causal_block_size": 3}}, 161, 6),
]


def draw_plans(folder: Path) -> None:
    """Print each demo plan and write `plan_<task>.txt` and `plan_<task>.png` into `folder`."""
    for name, params, num_frames, steps in DEMO_PLANS:
        plan = get_task(name, **params).plan(num_frames=num_frames, num_steps=steps)
        table = plan.table()
        print(table, end="\n\n")
        atomic_write_bytes(folder / f"plan_{name}.txt", (table + "\n").encode())
        plan.save_heatmap(folder / f"plan_{name}.png")
        print(f"wrote {folder / f'plan_{name}.png'}\n")


def write_demo_image(path: Path, height: int, width: int) -> None:
    """A synthetic colour-gradient image to condition on (no assets needed)."""
    import torch

    from pusa_fw.io.image import save_image

    rows = torch.linspace(-1, 1, height).view(height, 1).expand(height, width)
    cols = torch.linspace(-1, 1, width).view(1, width).expand(height, width)
    image = torch.stack([rows, cols, (rows * cols)], dim=0).clamp(-1, 1)
    save_image(path, image)


def generate_videos(folder: Path) -> None:
    """Build the tiny Wan set and run `pusa-fw generate` for i2v and a rolling loop."""
    from pusa_fw_wan.testing.tiny import build_tiny_wan

    from pusa_fw.cli import main as cli
    from pusa_fw.io import read_video
    from pusa_fw.io.image import save_contact_sheet
    from pusa_fw.io.pixels import uint8_to_video

    tiny = build_tiny_wan(folder / "tiny_wan")
    image = folder / "demo_image.png"
    write_demo_image(image, 64, 96)
    size = ["--height", "64", "--width", "96", "--num-steps", "4", "--seed", "0", "--profile"]
    runs = [
        ["--task", "i2v", "--prompt", "a red car on a street at night", "--image", str(image),
         "--num-frames", "17", "--sampler", "unipc", "--cfg", "3", "--out", str(folder / "demo_i2v.mp4")],
        ["--task", "loop", "--prompt-at", "0:a bird flies over the sea", "--prompt-at", "24:a boat on the sea",
         "--num-frames", "49", "--window", "17", "--overlap", "5", "--cfg", "1",
         "--out", str(folder / "demo_loop.mp4")],
    ]
    for run in runs:
        code = cli(["generate", *tiny.cli_args(), *size, *run])
        if code != 0:
            raise SystemExit(code)
        video = Path(run[-1])
        sheet = video.with_suffix(".png")
        save_contact_sheet(sheet, uint8_to_video(read_video(video).frames))
        print(f"wrote {video} (+ .json sidecar, {sheet.name} contact sheet)\n")


def main(argv: list[str] | None = None) -> int:
    """Draw the plans and generate the demo videos into the folder given (default ``outputs``)."""
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0] if args else "outputs")
    folder.mkdir(parents=True, exist_ok=True)
    draw_plans(folder)
    generate_videos(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
