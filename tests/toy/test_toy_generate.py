"""A toy model directory runs through ``pusa-fw generate`` exactly as a Wan model does: every task, the
same loader, pipeline, plan and sampler; with a clean hold and the lossless codec the held frame comes
back bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pusa_fw.cli import main
from pusa_fw.io.image import load_image, save_image
from pusa_fw.io.video import save_video
from pusa_fw.io.video_read import read_video
from pusa_fw_toy.world import WorldConfig, render_clip


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("toy_media")
    clip = render_clip(WorldConfig(), 5)
    paths = {"first": folder / "first.png", "last": folder / "last.png", "clip": folder / "clip.mp4"}
    save_image(paths["first"], clip.video[:, 0])
    save_image(paths["last"], clip.video[:, -1])
    save_video(paths["clip"], clip.video[:, :4], fps=8)
    return paths


TASKS = {
    "t2v": [],
    "i2v": ["--image", "{first}"],
    "start-end": ["--keyframe", "0:{first}", "--keyframe", "8:{last}"],
    "extension": ["--video", "{clip}", "--given-frames", "3", "--strengths", "1.0"],
}


@pytest.mark.parametrize("task", list(TASKS))
def test_toy_dir_runs_every_task_through_generate(task: str, toy_dir: Path, media: dict[str, Path],
                                                  tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / f"{task}.mp4"
    extra = [item.format(**{key: str(value) for key, value in media.items()}) for item in TASKS[task]]
    status = main(["generate", "--model", str(toy_dir), "--task", task, "--prompt", "a red square",
                   "--num-frames", "9", "--height", "16", "--width", "16", "--steps", "3", "--cfg", "1",
                   "--fps", "8", "--out", str(out), *extra])
    assert status == 0, capsys.readouterr().err
    decoded = read_video(out)
    assert len(decoded.frames) == 9 and decoded.frames[0].shape == (16, 16, 3)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["task"]["task"] == task
    assert sidecar["plan"]["num_latent_frames"] == 9


def test_clean_i2v_keeps_the_image_bit_for_bit(toy_dir: Path, media: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from pusa_fw_toy.model_format import ToyModelFormat

    out, latents_file = tmp_path / "clean.mp4", tmp_path / "clean.safetensors"
    assert main(["generate", "--model", str(toy_dir), "--task", "i2v", "--policy", "clean", "--image",
                 str(media["first"]), "--prompt", "a red square", "--num-frames", "9", "--height", "16",
                 "--width", "16", "--steps", "3", "--cfg", "2", "--out", str(out),
                 "--save-latents", str(latents_file)]) == 0
    video = ToyModelFormat().codec(toy_dir).decode(load_file(str(latents_file))["latents"])[0]
    image = load_image(media["first"], (16, 16))
    assert torch.equal(video[:, 0], image)
    assert json.loads(out.with_suffix(".json").read_text())["clean_held_frames"] == [0]
    assert not torch.equal(video[:, 1], image)


def test_toy_dir_with_extra_model_files_is_a_one_line_error(toy_dir: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    status = main(["generate", "--model", str(toy_dir), "--vae", str(toy_dir / "toy.json"), "--prompt", "a",
                   "--num-frames", "9", "--height", "16", "--width", "16", "--out", str(tmp_path / "x.mp4")])
    assert status == 2
    assert "drop --vae" in capsys.readouterr().err
