"""``pusa-fw generate --task rolling`` on the shipped toy model with its VTA LoRA, exactly as a user runs it:
a 65-frame video from one image in 9-frame windows with 3 frames of history (issue 25's setting), the sidecar
that records it, and the plan heatmap of the whole timeline that ``--plan-png`` writes (the plan rebuilt
from the sidecar's task parameters and the toy model's own geometry is checked to be the one generate ran)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pusa_fw.cli import main
from pusa_fw.io.video_read import read_video

NUM_FRAMES, WINDOW, OVERLAP, STEPS, SHIFT = 65, 9, 3, 2, 2.0


@pytest.fixture(scope="module")
def rolled(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from pusa_fw_toy.demo import ASSETS
    from pusa_fw_toy.shipped import shipped_lora, shipped_model_dir

    out = tmp_path_factory.mktemp("rolling") / "rolling.mp4"
    heatmap = out.with_name("rolling_plan.png")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the conftest's one-thread fixture
    try:
        status = main(["generate", "--model", str(shipped_model_dir()), "--lora", str(shipped_lora(0)),
                       "--task", "rolling", "--image", str(ASSETS / "i2v_first.png"),
                       "--prompt", "a red square",
                       "--num-frames", str(NUM_FRAMES), "--height", "16", "--width", "16",
                       "--window", str(WINDOW), "--overlap", str(OVERLAP), "--steps", str(STEPS),
                       "--shift", str(SHIFT), "--cfg", "1", "--fps", "8", "--seed", "0", "--no-progress",
                       "--out", str(out), "--plan-png", str(heatmap)])
    finally:
        torch.set_num_threads(threads)
    assert status == 0
    sidecar = json.loads(out.with_suffix(".json").read_text())
    return {"out": out, "model": shipped_model_dir(), "sidecar": sidecar, "heatmap": heatmap}


def test_rolling_writes_the_whole_long_video(rolled: dict) -> None:
    decoded = read_video(rolled["out"])
    assert len(decoded.frames) == NUM_FRAMES
    assert decoded.frames[0].shape == (16, 16, 3)


def test_sidecar_records_rolling_with_its_windows_and_plan(rolled: dict) -> None:
    sidecar = rolled["sidecar"]
    assert sidecar["task"]["task"] == "rolling"
    params = sidecar["task"]["params"]
    assert (params["window"], params["overlap"], params["image"]) == (WINDOW, OVERLAP, True)
    plan = sidecar["plan"]
    assert plan["num_latent_frames"] == NUM_FRAMES and plan["num_steps"] == STEPS * len(plan["windows"])
    assert plan["held_frames"] == [0]
    windows = plan["windows"]
    assert windows[0][0] == 0 and windows[-1][1] == NUM_FRAMES, "the windows cover the whole timeline"
    assert all(stop - start == WINDOW for start, stop in windows), "full-length windows (stride-1 codec)"
    history = [earlier[1] - later[0] for earlier, later in zip(windows, windows[1:])]
    assert history[:-1] == [OVERLAP] * (len(windows) - 2), "each window keeps OVERLAP frames of history"
    assert OVERLAP <= history[-1] < WINDOW, "a short last stretch takes more history, not a shorter window"
    assert plan["model_calls"] == STEPS * len(windows)
    assert [Path(lora["path"]).name for lora in sidecar["loras"]] == ["vta-s0.safetensors"]


def test_plan_heatmap_of_the_whole_timeline(rolled: dict, tmp_path: Path) -> None:
    from PIL import Image

    from pusa_fw import get_task
    from pusa_fw_toy.model_format import ToyModelFormat

    sidecar = rolled["sidecar"]
    task = get_task(sidecar["task"]["task"], **sidecar["task"]["params"])
    plan = task.plan(NUM_FRAMES, STEPS, SHIFT, ToyModelFormat().geometry(rolled["model"]))
    assert json.loads(json.dumps(plan.summary())) == sidecar["plan"], "the heatmap draws generate's plan"
    assert bool(plan.update_mask().any(dim=0).all()), "every frame of the timeline is denoised in some window"
    with Image.open(rolled["heatmap"]) as image:  # written by generate --plan-png
        assert image.format == "PNG" and image.width > 100 and image.height > 100
    drawn = tmp_path / "again.png"
    plan.save_heatmap(drawn)  # the same plan drawn through the library gives the same picture
    with Image.open(rolled["heatmap"]) as written, Image.open(drawn) as again:
        assert written.size == again.size and written.tobytes() == again.tobytes()


def test_plan_png_must_be_a_png(tmp_path: Path, capsys) -> None:
    from pusa_fw_toy.shipped import shipped_model_dir

    status = main(["generate", "--model", str(shipped_model_dir()), "--task", "t2v", "--prompt", "a red square",
                   "--num-frames", "9", "--height", "16", "--width", "16", "--out", str(tmp_path / "t.mp4"),
                   "--plan-png", str(tmp_path / "plan.jpg")])
    assert status == 2 and "--plan-png" in capsys.readouterr().err and not (tmp_path / "t.mp4").exists()
