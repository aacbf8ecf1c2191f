"""`make demo` (``python -m pusa_fw_toy.demo``): its bundled media are the world's own frames, and the demo
draws the three plans and writes, per task, an mp4 whose given frames are kept and whose square moves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pusa_fw.io.image import load_image
from pusa_fw_toy.demo import ASSETS, DEMO_RUNS, main, render_assets
from pusa_fw_toy.world import WorldConfig, render_clip


def test_bundled_media_are_the_world_frames_they_claim(tmp_path: Path) -> None:
    fresh = render_assets(tmp_path)
    for path in fresh:
        if path.suffix == ".png":
            assert path.read_bytes() == (ASSETS / path.name).read_bytes(), path.name
    clips = {run.task: render_clip(WorldConfig(), run.seed) for run in DEMO_RUNS}
    image = load_image(ASSETS / "i2v_first.png", (16, 16))
    assert (image - clips["i2v"].video[:, 0]).abs().max() <= 1 / 127.5 + 1e-6
    assert {run.caption for run in DEMO_RUNS} == {clip.caption for clip in clips.values()}
    from pusa_fw.io.video_read import load_video

    clip = load_video(ASSETS / "extension_clip.mp4")
    assert clip.shape == (3, 3, 16, 16)
    assert (clip - clips["extension"].video[:, :3]).abs().max() <= 1 / 127.5 + 1e-6, "stored losslessly"


def test_demo_writes_plans_videos_and_sheets(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from pusa_fw.io.video_read import read_video

    assert main([str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for run in DEMO_RUNS:
        stem = f"demo_{run.task.replace('-', '_')}"
        assert (tmp_path / f"plan_{run.task}.png").is_file() and (tmp_path / f"plan_{run.task}.txt").is_file()
        assert (tmp_path / f"{stem}.png").stat().st_size > 0
        assert len(read_video(tmp_path / f"{stem}.mp4").frames) == 9
        sidecar = json.loads((tmp_path / f"{stem}.json").read_text())
        assert sidecar["task"]["task"] == run.task and sidecar["task"]["params"]["policy"] == "multiplier"
        assert [Path(lora["path"]).name for lora in sidecar["loras"]] == ["vta-s0.safetensors"]
        assert f"{run.task}: given frames {run.given}" in printed
        truth = render_clip(WorldConfig(), run.seed).direction
        line = next(line for line in printed.splitlines() if line.startswith(f"{run.task}: given frames"))
        assert f"its given frames point {truth}: it" in line
        assert line.endswith("it follows them"), line  # the shipped VTA on the demo's fixed seeds (README)
    sheet = load_image(tmp_path / "demo_i2v.png")
    assert sheet.shape[-2:] == (16 * 8 + 2 * 4, 9 * 16 * 8 + 10 * 4), "one row of 9 frames enlarged 8x"
    assert torch.isfinite(sheet).all()
