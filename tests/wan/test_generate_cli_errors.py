"""``pusa-fw generate`` bad input: exit status 2, one line on stderr naming the value, no output left."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pusa_fw.cli import main
from pusa_fw.io import save_image, save_video
from pusa_fw_wan.testing.tiny import TinyWan

FAST = ["--height", "32", "--width", "48", "--steps", "1", "--cfg", "1"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    generator = torch.Generator().manual_seed(0)
    image = save_image(folder / "ok.png", torch.rand(3, 32, 48, generator=generator) * 2 - 1)
    clip = save_video(folder / "short.mp4", torch.rand(3, 5, 32, 48, generator=generator) * 2 - 1)
    broken_image = folder / "broken.png"
    broken_image.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    broken_video = folder / "broken.mp4"
    broken_video.write_bytes(b"\x00\x00\x00\x18ftypmp42 garbage garbage")
    lora = folder / "wide_lora.safetensors"  # made for a dim-64 model; the tiny DiT has dim 32
    save_file({"blocks.0.self_attn.q.lora_A.weight": torch.randn(4, 64, generator=generator),
               "blocks.0.self_attn.q.lora_B.weight": torch.randn(64, 4, generator=generator)}, str(lora))
    foreign_lora = folder / "foreign_lora.safetensors"
    save_file({"unet.down.0.lora_A.weight": torch.randn(4, 32),
               "unet.down.0.lora_B.weight": torch.randn(32, 4)}, str(foreign_lora))
    broken_model = folder / "broken_model"
    broken_model.mkdir()
    header_size_16 = b"\x10" + b"\x00" * 7
    (broken_model / "diffusion_pytorch_model.safetensors").write_bytes(header_size_16 + b"{bad json")
    dot = folder / "dot.png"
    save_image(dot, torch.zeros(3, 1, 1))
    (folder / "taken.mp4").mkdir()
    bad_toml = folder / "bad.toml"
    bad_toml.write_text('prompt = "a cat"\nstepz = 3\n')
    return {"bad_toml": bad_toml, "image": image, "dot": dot, "clip": clip, "broken_image": broken_image,
            "broken_video": broken_video, "lora": lora, "foreign_lora": foreign_lora,
            "broken_model": broken_model, "folder": folder}


# (case id, arguments, text the message must contain); {name} is replaced by the file of that name.
ERROR_CASES = [
    ("missing image", ["--task", "i2v", "--image", "{folder}/nope.png"], "does not exist"),
    ("undecodable image", ["--task", "i2v", "--image", "{broken_image}"], "cannot decode image"),
    ("undecodable video", ["--task", "v2v", "--video", "{broken_video}"], "cannot open video"),
    ("video too short", ["--task", "v2v", "--video", "{clip}", "--num-frames", "9"], "gives 5 frames"),
    ("frames not 4n+1", ["--num-frames", "10"], "num_frames=10 is not of the form 4n+1; use 9 or 13"),
    ("height not 16n", ["--height", "40"], "height=40 must be a positive multiple of 16"),
    ("width not 16n", ["--width", "50"], "width=50 must be a positive multiple of 16"),
    ("keyframe out of range", ["--task", "keyframes", "--keyframe", "0:{image}", "--keyframe", "12:{image}"],
     "pixel frame 12 is outside a 9-frame video; use 0..8"),
    ("start-end keyframe misplaced",
     ["--task", "start-end", "--keyframe", "0:{image}", "--keyframe", "4:{image}"],
     "holds it in latent frame 2"),
    ("keyframe text", ["--task", "keyframes", "--keyframe", "{image}"], "is not FRAME:PATH[:STRENGTH]"),
    ("lora does not fit", ["--lora", "{lora}"], "wide_lora"),
    ("lora of another model", ["--lora", "{foreign_lora}:0.5"], "matches no module"),
    ("missing lora", ["--lora", "{folder}/nope.safetensors"], "does not exist"),
    ("missing model", ["--model", "{folder}/no_model"], "does not exist"),
    ("unreadable model", ["--model", "{broken_model}", "--vae", "{tiny_vae}", "--text-encoder", "{tiny_te}"],
     "broken_model"),
    ("output folder missing", ["--out", "{folder}/no/such/dir/out.mp4"], "does not exist; create it first"),
    ("output not mp4", ["--out", "{folder}/out.avi"], "must end in .mp4"),
    ("output is a directory", ["--out", "{folder}/taken.mp4"], "is a directory; give a file name inside it"),
    ("special output file", ["--out", "/dev/null"], "must end in .mp4"),
    ("output on a pseudo file system", ["--out", "/proc/x.mp4"], "does not take new files"),
    ("seed beyond 64 bits", ["--seed", str(2**64)], "--seed: Input should be less than or equal to"),
    ("oversized frame", ["--height", "20000", "--width", "20000"], "less than or equal to 4096"),
    ("infinite shift", ["--shift", "inf"], "--shift: Input should be a finite number"),
    ("one-pixel image", ["--task", "i2v", "--image", "{dot}"], "is 1x1 pixels"),
    ("missing input", ["--task", "i2v"], "needs image: give --image PATH"),
    ("unused input", ["--task", "t2v", "--image", "{image}"], "does not use image"),
    ("option of another task", ["--task", "i2v", "--image", "{image}", "--window", "9"],
     "--window is not a parameter of task 'i2v'"),
    ("bad task value", ["--task", "i2v", "--image", "{image}", "--strength", "2"], "--strength"),
    ("unknown task", ["--task", "teleport"], "teleport"),
    ("unknown sampler", ["--sampler", "magic"], "magic"),
    ("prompt ranges on one window", ["--prompt-at", "4:a dog"], "sliding windows"),
    ("missing run file", ["--config", "{folder}/none.toml"], "does not exist"),
    ("unknown run file key", ["--config", "{bad_toml}"], "bad.toml: stepz: Extra inputs are not permitted"),
    ("keyframe positions twice", ["--task", "keyframes", "--keyframe", "0:{image}", "--positions", "0"],
     "given twice"),
    ("mixed keyframe strengths",
     ["--task", "keyframes", "--keyframe", "0:{image}:0.5", "--keyframe", "8:{image}"],
     "to every --keyframe"),
]


@pytest.mark.parametrize(
    "args, expected", [case[1:] for case in ERROR_CASES], ids=[case[0] for case in ERROR_CASES]
)
def test_bad_input_is_one_line_and_leaves_no_output(
    args: list[str], expected: str, tiny: TinyWan, files: dict[str, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = {key: str(value) for key, value in files.items()} | {"tiny_vae": str(tiny.vae),
                                                                 "tiny_te": str(tiny.text_encoder)}
    filled = [arg.format(**names) for arg in args]
    out = tmp_path / "out.mp4"
    base = ["generate", *tiny.cli_args(), "--prompt", "a cat", "--num-frames", "9", *FAST, "--out", str(out)]
    status = main(base + filled)
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert status == 2
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("pusa-fw: error: ")
    assert expected in lines[0]
    assert captured.out == ""
    assert list(tmp_path.iterdir()) == []  # no video, no sidecar, no temporary file
    assert not list(files["folder"].glob("out*")) and not list(files["folder"].glob(".out*"))


def test_a_failing_write_leaves_no_partial_file(tiny: TinyWan, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import pusa_fw.io.video as video_module
    from pusa_fw.errors import InputError

    def fail_halfway(path, frames, **kwargs):
        Path(path).write_bytes(b"half a video")
        raise InputError("disk full while writing (simulated)")

    monkeypatch.setattr(video_module, "write_video", fail_halfway)
    out = tmp_path / "out.mp4"
    status = main(["generate", *tiny.cli_args(), "--prompt", "a cat", "--num-frames", "5", *FAST,
                   "--out", str(out)])
    assert status == 2
    assert capsys.readouterr().err.strip() == "pusa-fw: error: disk full while writing (simulated)"
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_output_fails_before_any_model_is_loaded(tiny: TinyWan, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    import pusa_fw_wan.pipeline.loading as loading

    def no_loading(*args, **kwargs):
        raise AssertionError("models were loaded before the output path was checked")

    monkeypatch.setattr(loading, "load_models", no_loading)
    status = main(["generate", *tiny.cli_args(), "--prompt", "a cat", "--num-frames", "5", *FAST,
                   "--out", "/proc/x.mp4"])
    assert status == 2
    assert capsys.readouterr().err.strip().startswith("pusa-fw: error: cannot write '/proc/x.mp4'")
    assert not Path("/proc/x.mp4").exists()
