"""``pusa-fw generate --weights-dtype`` and the ``weights_dtype`` run-file key on the tiny Wan set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from pusa_fw.cli import main
from pusa_fw.io import read_video
from pusa_fw_wan.dit.storage import is_large_linear
from pusa_fw_wan.testing.tiny import TinyWan

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = [
    "--prompt",
    "a cat on the beach",
    "--height",
    "32",
    "--width",
    "48",
    "--num-frames",
    "5",
    "--steps",
    "2",
    "--cfg",
    "1",
    "--seed",
    "3",
]


def _generate(tiny: TinyWan, out: Path, *args: str) -> int:
    return main(["generate", *tiny.cli_args(), *FAST, "--out", str(out), *args])


def _frames(path: Path) -> np.ndarray:
    return read_video(path).frames.astype(int)


def _runtime(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())["runtime"]


def test_weights_dtype_flag_and_run_file(tiny: TinyWan, tmp_path: Path) -> None:
    latents = {name: tmp_path / f"{name}.safetensors" for name in ("fp32", "fp8")}
    assert _generate(tiny, tmp_path / "fp32.mp4", "--save-latents", str(latents["fp32"])) == 0
    assert _generate(tiny, tmp_path / "fp8.mp4", "--weights-dtype", "float8_e4m3fn",
                     "--save-latents", str(latents["fp8"])) == 0
    assert _runtime(tmp_path / "fp32.mp4")["weights_dtype"] == "float32"
    assert _runtime(tmp_path / "fp8.mp4")["weights_dtype"] == "float8_e4m3fn"
    fp8 = _frames(tmp_path / "fp8.mp4")
    # Same video up to fp8 rounding, compared before the (discontinuous) H.264 codec: every large weight is
    # rounded to e4m3 (unit roundoff 2^-4 of its per-tensor scale), so the latents may move by up to about
    # that much relative (measured: 1.2e-2 in Frobenius norm), and a float32 run is not an fp8 run (> 0).
    want, got = (load_file(str(latents[name]))["latents"] for name in ("fp32", "fp8"))
    relative = float((got - want).norm() / want.norm())
    assert 0 < relative <= 2.0**-4, relative
    run_file = tmp_path / "run.toml"
    run_file.write_text(
        'prompt = "a cat on the beach"\nheight = 32\nwidth = 48\nnum_frames = 5\nsteps = 2\ncfg = 1.0\n'
        f'seed = 3\nweights_dtype = "float8_e4m3fn"\nmodel = "{tiny.root}"\nvae = "{tiny.vae}"\n'
        f'text_encoder = "{tiny.text_encoder}"\ntokenizer = "{tiny.tokenizer}"\nout = "by_file.mp4"\n'
    )
    assert main(["generate", "--config", str(run_file)]) == 0
    assert np.array_equal(_frames(tmp_path / "by_file.mp4"), fp8)


def test_an_fp8_model_directory_stays_fp8(tiny: TinyWan, tmp_path: Path) -> None:
    folder = tmp_path / "fp8_model"
    shutil.copytree(tiny.root, folder)
    weights = folder / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    save_file(
        {
            name: tensor.to(torch.float8_e4m3fn)
            if is_large_linear(name.rpartition(".")[0]) and name.endswith(".weight")
            else tensor
            for name, tensor in state.items()
        },
        str(weights),
    )
    args = [
        "--model",
        str(folder),
        "--vae",
        str(tiny.vae),
        "--text-encoder",
        str(tiny.text_encoder),
        "--tokenizer",
        str(tiny.tokenizer),
    ]
    out = tmp_path / "auto.mp4"
    assert main(["generate", *args, *FAST, "--out", str(out)]) == 0
    assert _runtime(out)["weights_dtype"] == "float8_e4m3fn"
    assert (
        main(["generate", *args, *FAST, "--out", str(tmp_path / "up.mp4"), "--weights-dtype", "float32"]) == 0
    )
    assert _runtime(tmp_path / "up.mp4")["weights_dtype"] == "float32"
    # Same values either way: fp8 storage computes what the upcast file computes.
    assert np.array_equal(_frames(out), _frames(tmp_path / "up.mp4"))


def test_unknown_weights_dtype_names_the_choices(tiny: TinyWan, tmp_path: Path, capsys) -> None:
    assert _generate(tiny, tmp_path / "x.mp4", "--weights-dtype", "int4") == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # argparse: usage, then the one error line
    assert "--weights-dtype" in last and "float8_e4m3fn" in last and "Traceback" not in last, last
    assert not (tmp_path / "x.mp4").exists()


def test_fp8_with_fsdp_is_refused_before_loading(tiny: TinyWan, tmp_path: Path, capsys) -> None:
    assert _generate(tiny, tmp_path / "x.mp4", "--weights-dtype", "float8_e4m3fn", "--fsdp") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pusa-fw: error: --weights-dtype float8_e4m3fn with --fsdp") and "\n" not in err, (
        err
    )


def test_fp8_with_a_lora_and_block_offload_equals_resident(tiny: TinyWan, tmp_path: Path) -> None:
    from pusa_fw_wan import WanDiT
    from pusa_fw_wan.testing.storage_error import write_random_lora

    lora = write_random_lora(str(tmp_path / "lora.safetensors"), WanDiT.from_pretrained(tiny.root), rank=2)
    common = ["--weights-dtype", "float8_e4m3fn", "--lora", f"{lora}:1.4"]
    assert _generate(tiny, tmp_path / "resident.mp4", *common) == 0
    assert _generate(tiny, tmp_path / "block.mp4", *common, "--offload", "block") == 0
    assert np.array_equal(_frames(tmp_path / "resident.mp4"), _frames(tmp_path / "block.mp4"))
    runtime = _runtime(tmp_path / "block.mp4")
    assert runtime["weights_dtype"] == "float8_e4m3fn" and runtime["lora_merged"] is True
