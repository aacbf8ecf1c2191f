"""``pusa-fw generate`` end to end on a tiny random Wan set: every task, the console script, run files,
LoRA, offload, profile output and the sidecar."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pusa_fw.cli import main
from pusa_fw.io import read_video, save_image, save_video
from pusa_fw.plugins import get_registry
from pusa_fw_wan.testing.tiny import TinyWan

SIZE = ["--height", "32", "--width", "48"]
FAST = [*SIZE, "--steps", "2", "--cfg", "1", "--seed", "3"]

# Every registered task needs a case here (a new task without one fails `test_every_task_has_a_case`).
TASK_CASES: dict[str, list[str]] = {
    "t2v": ["--num-frames", "9"],
    "i2v": ["--num-frames", "9", "--image", "{k0}"],
    "start-end": ["--num-frames", "9", "--keyframe", "0:{k0}:1.0", "--keyframe", "8:{k1}:0.9"],
    "keyframes": ["--num-frames", "9", "--keyframe", "0:{k0}", "--keyframe", "4:{k1}", "--keyframe", "8:{k2}",
                  "--policy", "multiplier"],
    "extension": ["--num-frames", "13", "--video", "{clip}", "--given-frames", "5", "--strengths", "1.0,0.8"],
    "transition": ["--num-frames", "13", "--video", "{clip}", "--video-b", "{clip_b}", "--tail-frames", "1",
                   "--head-frames", "5"],
    "v2v": ["--num-frames", "9", "--video", "{clip}", "--strength", "0.6"],
    "rolling": ["--num-frames", "13", "--window", "9", "--overlap", "5", "--image", "{k0}",
                "--prompt-at", "8:a dog runs"],
    "loop": ["--num-frames", "17", "--window", "9", "--overlap", "1"],
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("media")
    generator = torch.Generator().manual_seed(0)
    paths = {}
    for index in range(3):  # odd sizes: the CLI fits them to 32x48
        picture = torch.rand(3, 40, 60, generator=generator) * 2 - 1
        paths[f"k{index}"] = str(save_image(folder / f"k{index}.png", picture))
    clip, clip_b = (torch.rand(3, 21, 32, 48, generator=generator) * 2 - 1,
                    torch.rand(3, 9, 64, 96, generator=generator) * 2 - 1)
    paths["clip"] = str(save_video(folder / "clip.mp4", clip))
    paths["clip_b"] = str(save_video(folder / "clip_b.mp4", clip_b))
    return paths


def generate(tiny: TinyWan, out: Path, *args: str) -> int:
    return main(["generate", *tiny.cli_args(), "--prompt", "a cat on the beach", *FAST, "--out", str(out),
                 *args])


def read_back(path: Path) -> np.ndarray:
    return read_video(path).frames


def test_every_task_has_a_case() -> None:
    assert sorted(get_registry().names("tasks")) == sorted(TASK_CASES)


@pytest.mark.parametrize("task_name", sorted(TASK_CASES))
def test_every_task_writes_a_playable_mp4_and_a_sidecar(
    task_name: str, tiny: TinyWan, media: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [arg.format(**media) for arg in TASK_CASES[task_name]]
    out = tmp_path / f"{task_name}.mp4"
    assert generate(tiny, out, "--task", task_name, *args) == 0
    num_frames = int(args[args.index("--num-frames") + 1])
    frames = read_back(out)
    assert frames.shape == (num_frames, 32, 48, 3)
    assert frames.std() > 1.0  # not a blank video
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["task"]["task"] == task_name
    assert sidecar["seed"] == 3
    assert sidecar["output"] == {"frames": num_frames, "height": 32, "width": 48, "fps": 16}
    assert sidecar["plan"]["num_latent_frames"] == (num_frames - 1) // 4 + 1
    assert sidecar["versions"]["torch"] == metadata.version("torch")
    weights = tiny.root / "diffusion_pytorch_model.safetensors"
    listed = {item["name"]: item["sha256"] for item in sidecar["models"]["dit"]["files"]}
    assert listed["diffusion_pytorch_model.safetensors"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert capsys.readouterr().out.splitlines()[:2] == [str(out), str(out.with_suffix(".json"))]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, out.with_suffix(".json").name])


def test_task_options_reach_the_task(tiny: TinyWan, media: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "kf.mp4"
    assert generate(tiny, out, "--task", "keyframes", "--num-frames", "9",
                    "--keyframe", f"0:{media['k0']}:1.0", "--keyframe", f"8:{media['k1']}:0.5",
                    "--policy", "clean") == 0
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["task"]["params"]["positions"] == [0, 8]
    assert sidecar["task"]["params"]["strengths"] == [1.0, 0.5]
    assert sidecar["task"]["params"]["policy"] == "clean"
    assert sidecar["clean_held_frames"] == [0, 2]
    assert sidecar["inputs"]["keyframes"][1]["frame"] == 8
    rolling = tmp_path / "rolling.mp4"  # rolling tasks take --keyframe as keyframes / keyframe_strengths
    assert generate(tiny, rolling, "--task", "rolling", "--num-frames", "17", "--window", "9",
                    "--overlap", "5", "--keyframe", f"12:{media['k2']}:0.7", "--image", media["k0"]) == 0
    params = json.loads(rolling.with_suffix(".json").read_text())["task"]["params"]
    assert (params["keyframes"], params["keyframe_strengths"], params["image"]) == ([12], [0.7], True)


def test_console_script_runs_in_a_subprocess(tiny: TinyWan, media: dict[str, str], tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "pusa-fw"
    assert script.is_file(), "the pusa-fw console script is not installed in this environment"
    out = tmp_path / "sub.mp4"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    command = [str(script), "generate", *tiny.cli_args(), "--task", "i2v", "--image", media["k0"],
               "--prompt", "a cat", "--num-frames", "5", *FAST, "--out", str(out), "--profile"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == str(out)
    profile = lines[-1]
    assert profile.startswith("profile: ")
    assert all(f"{phase} " in profile for phase in ("text", "denoise", "decode"))
    assert read_back(out).shape == (5, 32, 48, 3)


def test_guidance_with_a_negative_prompt(tiny: TinyWan, tmp_path: Path) -> None:
    common = ["--task", "t2v", "--num-frames", "5", "--cfg", "3"]
    assert generate(tiny, tmp_path / "neg.mp4", *common, "--negative-prompt", "dark night") == 0
    assert generate(tiny, tmp_path / "default.mp4", *common) == 0
    assert generate(tiny, tmp_path / "off.mp4", "--task", "t2v", "--num-frames", "5") == 0
    names = ("neg", "default", "off")
    sidecars = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in names}
    assert sidecars["neg"]["negative_prompt"] == "dark night"
    assert sidecars["default"]["negative_prompt"].startswith("色调艳丽")
    assert sidecars["off"]["negative_prompt"] is None and sidecars["off"]["sampling"]["cfg"] == 1.0
    videos = {name: read_back(tmp_path / f"{name}.mp4").astype(int) for name in ("neg", "default", "off")}
    assert np.abs(videos["neg"] - videos["default"]).max() > 0
    assert np.abs(videos["default"] - videos["off"]).max() > 0


def test_run_file_equals_the_flags(tiny: TinyWan, media: dict[str, str], tmp_path: Path) -> None:
    by_flags = tmp_path / "flags.mp4"
    assert generate(tiny, by_flags, "--task", "i2v", "--image", media["k0"], "--num-frames", "9",
                    "--strength", "0.9") == 0
    image = Path(media["k0"])
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "start.png").write_bytes(image.read_bytes())
    run_file = tmp_path / "in" / "run.toml"
    run_file.write_text(
        f'prompt = "a cat on the beach"\nimage = "start.png"\nnum_frames = 9\nheight = 32\nwidth = 48\n'
        f'steps = 2\ncfg = 1.0\nseed = 3\nmodel = "{tiny.root}"\nvae = "{tiny.vae}"\n'
        f'text_encoder = "{tiny.text_encoder}"\ntokenizer = "{tiny.tokenizer}"\nout = "toml.mp4"\n'
        '[task]\nname = "i2v"\nstrength = 0.9\n'
    )
    assert main(["generate", "--config", str(run_file)]) == 0
    by_file = tmp_path / "in" / "toml.mp4"  # relative paths are relative to the run file
    assert np.array_equal(read_back(by_file), read_back(by_flags))
    sidecar = json.loads(by_file.with_suffix(".json").read_text())
    assert sidecar["task"] == {"task": "i2v", "params": json.loads(by_flags.with_suffix(".json").read_text())
                               ["task"]["params"]}
    override = ["--seed", "4", "--out", str(tmp_path / "s4.mp4")]
    assert main(["generate", "--config", str(run_file), *override]) == 0
    assert json.loads((tmp_path / "s4.json").read_text())["seed"] == 4  # flags override the file


def tiny_lora(path: Path, dim: int, rank: int = 4) -> Path:
    generator = torch.Generator().manual_seed(1)
    tensors = {}
    for block in (0, 1):
        for layer in ("self_attn.q", "cross_attn.v"):
            tensors[f"blocks.{block}.{layer}.lora_A.weight"] = torch.randn(rank, dim, generator=generator)
            tensors[f"blocks.{block}.{layer}.lora_B.weight"] = torch.randn(dim, rank, generator=generator)
    save_file(tensors, str(path))
    return path


def test_lora_changes_the_video_and_is_recorded(tiny: TinyWan, tmp_path: Path) -> None:
    lora = tiny_lora(tmp_path / "style.safetensors", dim=32)
    assert generate(tiny, tmp_path / "plain.mp4", "--num-frames", "5") == 0
    assert generate(tiny, tmp_path / "lora.mp4", "--num-frames", "5", "--lora", f"{lora}:0.5") == 0
    assert np.abs(read_back(tmp_path / "plain.mp4").astype(int) - read_back(tmp_path / "lora.mp4")).max() > 0
    recorded = json.loads((tmp_path / "lora.json").read_text())["loras"]
    assert recorded[0]["strength"] == 0.5
    assert recorded[0]["files"][0]["sha256"] == hashlib.sha256(lora.read_bytes()).hexdigest()


@pytest.mark.parametrize("mode", ["model", "block"])
def test_offload_gives_the_same_video(mode: str, tiny: TinyWan, media: dict[str, str],
                                      tmp_path: Path) -> None:
    common = ["--task", "i2v", "--image", media["k1"], "--num-frames", "9", "--cfg", "2"]
    assert generate(tiny, tmp_path / "none.mp4", *common) == 0
    assert generate(tiny, tmp_path / f"{mode}.mp4", *common, "--offload", mode) == 0
    assert np.array_equal(read_back(tmp_path / "none.mp4"), read_back(tmp_path / f"{mode}.mp4"))
    assert json.loads((tmp_path / f"{mode}.json").read_text())["runtime"]["offload"] == mode


def test_history_guidance_changes_the_video_and_is_recorded(
    tiny: TinyWan, media: dict[str, str], tmp_path: Path
) -> None:
    common = ["--task", "i2v", "--image", media["k0"], "--num-frames", "9", "--steps", "2"]
    assert generate(tiny, tmp_path / "plain.mp4", *common) == 0
    assert generate(tiny, tmp_path / "history.mp4", *common, "--history-guidance", "2.5") == 0
    sidecar = json.loads((tmp_path / "history.json").read_text())
    assert sidecar["sampling"]["history_guidance"] == 2.5
    plain, history = read_back(tmp_path / "plain.mp4").astype(int), read_back(tmp_path / "history.mp4").astype(int)
    assert np.abs(plain - history).max() > 0
