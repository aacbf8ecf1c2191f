"""``torchrun -m pusa_fw generate`` with a parallel layout: the same video as one process, rank 0 writes,
and bad layouts fail on every rank with one line (exit 2), never a hang.

How runs are compared (`check_same_video`). On a CPU the DiT computes in float32 whatever ``--weights-dtype``
stores (bf16 / fp8 weights are dequantised exactly to float32), so two runs can differ only by float32
rounding where their kernels sum in another order, and they are compared on the saved latents (the
sampler's output, before any codec):

- ``--fsdp`` alone: every rank runs the one-process computation (same ops, same shapes, gathered weights).
  With the same thread count (the single run here uses one thread, as each torchrun rank does) the kernels
  are the same, so the latents and the video must be identical; any difference is a different load.
- other layouts (Ulysses, CFG-parallel) change GEMM and attention shapes: latents within
  ``LATENT_BOUND * max|latents|``. float32 reordering moves each reduction by O(n * 2^-24) relative (n <= 64
  terms in the tiny model; measured on the latents: 5e-7 relative across ISAs / thread counts), while one
  extra bf16 rounding of the weights moves them by 1e-3 (measured): the bound 1e-4 sits between the two.

The decoded mp4 frames are no measure of precision: H.264 (x264, yuv420p, crf 18) is discontinuous. On a
tiny random model its output is ~20 dB PSNR from its input, and changing 3 of 41472 input pixels by one
level (a float32 reordering in the VAE's conv kernels: ``ONEDNN_MAX_CPU_ISA=AVX2`` against AVX-512, same
latents) moved 5 % of the decoded pixels by 2..23 levels. That is what failed on Sapphire Rapids (AMX):
the in-process single run used all cores, the torchrun ranks one thread each, so oneDNN's float32 convs
summed in another order. Where the latents are not bit-equal the frames are only checked to be the same
clip (mean difference under 2 levels; measured 0.3 for that codec flip, tens of levels for another clip).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from pusa_fw.cli import main

from pusa_fw_wan.parallel.launch import run_torchrun
from pusa_fw_wan.testing.tiny import TinyWan, build_tiny_wan

# One thread in this process, like each torchrun rank (OMP_NUM_THREADS=1): the same CPU kernels.
pytestmark = pytest.mark.usefixtures("one_thread")

LATENT_BOUND = 1e-4
"""float32 reordering bound on the latents, relative to max|latents| (module docstring)."""

SMALL = ["--height", "32", "--width", "48", "--num-steps", "2", "--seed", "3", "--device", "cpu",
         "--prompt", "a cat on the beach"]
TASKS = {
    "i2v": ["--task", "i2v", "--num-frames", "9", "--cfg", "3"],
    "rolling": ["--task", "rolling", "--num-frames", "13", "--window", "9", "--overlap", "5", "--cfg", "3"],
    "loop": ["--task", "loop", "--num-frames", "17", "--window", "9", "--overlap", "1", "--cfg", "3"],
}


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("parallel_media") / "first.png"
    pixels = (np.random.default_rng(0).random((32, 48, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


def frames_of(path: Path) -> np.ndarray:
    """Decoded RGB frames `[T, H, W, 3]` uint8."""
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def torchrun_generate(tiny: TinyWan, nproc: int, *args: str, monitor_interval: float | None = None
                      ) -> tuple[int, str]:
    result = run_torchrun(["-m", "pusa_fw", "generate", *tiny.cli_args(), *SMALL, *args], nproc=nproc,
                          timeout=300, monitor_interval=monitor_interval)
    return result.returncode, result.stderr


def latents_of(path: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(path))["latents"]


def check_same_video(tiny: TinyWan, picture: str, tmp_path: Path, task: str, nproc: int,
                     layout: list[str], single: tuple[str, ...] | list[str] = ()) -> None:
    """One process (with `single` options) and ``nproc`` torchrun ranks under ``layout`` give the same
    latents and video (module docstring); only rank 0 writes."""
    args = [*TASKS[task], "--image", picture]
    one = [*args, *single, "--out", str(tmp_path / "single.mp4"), "--save-latents",
           str(tmp_path / "single.safetensors")]
    assert main(["generate", *tiny.cli_args(), *SMALL, *one]) == 0
    single, parallel = tmp_path / "single.mp4", tmp_path / "parallel.mp4"
    returncode, stderr = torchrun_generate(tiny, nproc, *args, *layout, "--out", str(parallel),
                                           "--save-latents", str(tmp_path / "parallel.safetensors"))
    assert returncode == 0, stderr[-3000:]
    want = latents_of(tmp_path / "single.safetensors")
    got_latents = latents_of(tmp_path / "parallel.safetensors")
    expected, got = frames_of(single), frames_of(parallel)
    assert got.shape == expected.shape and got_latents.shape == want.shape
    difference = float((got_latents - want).abs().max())
    if "--ulysses" not in layout and "--cfg-parallel" not in layout:  # --fsdp alone: the one-process ops
        assert torch.equal(got_latents, want), difference
        assert np.array_equal(got, expected)
    else:
        assert difference <= LATENT_BOUND * float(want.abs().max()), difference
        assert np.abs(got.astype(int) - expected.astype(int)).mean() < 2  # the same clip through x264
    record = json.loads(parallel.with_suffix(".json").read_text())
    ulysses = int(layout[layout.index("--ulysses") + 1]) if "--ulysses" in layout else 1
    assert record["parallel"] == {"world_size": nproc, "ulysses": ulysses, "fsdp": "--fsdp" in layout,
                                  "cfg_parallel": "--cfg-parallel" in layout,
                                  "fsdp_text": "--fsdp-text" in layout}
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "parallel.json", "parallel.mp4", "parallel.safetensors", "single.json", "single.mp4",
        "single.safetensors"]  # the other ranks wrote nothing


@pytest.mark.parametrize(("task", "layout"), [("i2v", ["--ulysses", "2", "--fsdp"]),
                                              ("rolling", ["--ulysses", "2"])], ids=["i2v", "rolling"])
def test_torchrun_generation_equals_one_process(tiny: TinyWan, picture: str, tmp_path: Path, task: str,
                                                layout: list[str]) -> None:
    check_same_video(tiny, picture, tmp_path, task, 2, layout)


@pytest.mark.slow
@pytest.mark.parametrize(("task", "nproc", "layout"), [
    ("i2v", 2, ["--cfg-parallel"]),
    ("loop", 2, ["--ulysses", "2", "--fsdp"]),
    ("i2v", 4, ["--ulysses", "2", "--cfg-parallel", "--fsdp"]),
], ids=["i2v-cfg", "loop", "i2v-4-ranks"])
def test_more_layouts_generate_the_same_video(tiny: TinyWan, picture: str, tmp_path: Path, task: str,
                                              nproc: int, layout: list[str]) -> None:
    check_same_video(tiny, picture, tmp_path, task, nproc, layout)


def scaled_fp8_copy(tiny: TinyWan, folder: Path) -> TinyWan:
    """The tiny set with its DiT's large linears stored as scaled fp8 (e4m3fn bits, one scale per row)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from pusa_fw_wan.dit.storage import is_large_linear

    shutil.copytree(tiny.root, folder)
    weights = folder / "diffusion_pytorch_model.safetensors"
    tensors = {}
    for name, tensor in load_file(str(weights)).items():
        module = name.removesuffix(".weight")
        if name.endswith(".weight") and is_large_linear(module):
            scale = tensor.abs().amax(dim=1).clamp_min(1e-12) / torch.finfo(torch.float8_e4m3fn).max
            tensors[name] = (tensor / scale[:, None]).to(torch.float8_e4m3fn)
            tensors[f"{module}.scale_weight"] = scale
        else:
            tensors[name] = tensor
    save_file(tensors, str(weights))
    return TinyWan(root=folder, vae=tiny.vae, text_encoder=tiny.text_encoder, tokenizer=tiny.tokenizer)


@pytest.mark.parametrize("weights_dtype", ["float8_e4m3fn", "bfloat16"])
def test_fsdp_loads_its_shards_of_a_scaled_fp8_file_and_equals_one_process(
        tiny: TinyWan, picture: str, tmp_path: Path, weights_dtype: str) -> None:
    """Shard-only ``--fsdp`` load: fp8 bits and per-row scales kept, or dequantised row by row to bf16."""
    fp8 = scaled_fp8_copy(tiny, tmp_path / "fp8_model")
    videos = tmp_path / "videos"
    videos.mkdir()
    check_same_video(fp8, picture, videos, "i2v", 2, ["--fsdp", "--weights-dtype", weights_dtype],
                     single=["--weights-dtype", weights_dtype])
    record = json.loads((videos / "parallel.json").read_text())
    assert record["runtime"]["weights_dtype"] == weights_dtype


def test_fsdp_shards_of_a_scaled_fp8_file_hold_the_one_process_bits(tiny: TinyWan, tmp_path: Path) -> None:
    """Each storage dtype: the ranks' shards, concatenated, equal one process's weights bit for bit (bf16 and
    fp16 dequantised row by row with each row's scale, in float32 then rounded once; fp8 bits and scales
    kept), and the replicated buffers (fp8 scales) equal them on every rank."""
    from safetensors.torch import load_file

    import shard_bits_worker as worker
    from pusa_fw_wan.dit.model import WanDiT

    fp8 = scaled_fp8_copy(tiny, tmp_path / "fp8_model")
    out = tmp_path / "shards"
    out.mkdir()
    result = run_torchrun([str(Path(worker.__file__)), str(fp8.root), str(out)], nproc=2, timeout=300,
                          env={"PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-3000:]
    for weights_dtype in worker.WEIGHTS_DTYPES:
        ranks = [load_file(str(out / f"{weights_dtype}-rank{rank}.safetensors")) for rank in (0, 1)]
        model = WanDiT.from_pretrained(fp8.root, weights_dtype=weights_dtype)
        assert str(model.weights_dtype) == f"torch.{weights_dtype}"
        for name, parameter in model.named_parameters():
            want = worker.bits(parameter.detach())
            got = torch.cat([shards[name] for shards in ranks]) if want.ndim else ranks[0][name]
            assert got.dtype == want.dtype and torch.equal(got, want), (weights_dtype, name)
        buffers = dict(model.named_buffers())
        assert any(name.endswith("scale_weight") for name in buffers) == weights_dtype.startswith("float8")
        for name, buffer in buffers.items():
            same = all(torch.equal(shards[name], worker.bits(buffer)) for shards in ranks)
            assert same, (weights_dtype, name)


def test_fp8_with_fsdp_from_a_file_not_in_fp8_is_one_line_before_loading(tiny: TinyWan, tmp_path: Path,
                                                                         capsys) -> None:
    out = tmp_path / "never.mp4"
    args = ["--task", "t2v", "--num-frames", "9", "--weights-dtype", "float8_e4m3fn", "--fsdp", "--out", str(out)]
    assert main(["generate", *tiny.cli_args(), *SMALL, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pusa-fw: error: --weights-dtype float8_e4m3fn with --fsdp needs a Wan DiT file "
                          "stored in float8_e4m3fn") and "\n" not in err, err
    assert not out.exists()


@pytest.fixture(scope="module")
def three_heads(tmp_path_factory: pytest.TempPathFactory) -> TinyWan:
    return build_tiny_wan(tmp_path_factory.mktemp("tiny_wan_3_heads"), dim=48, num_heads=3)


@pytest.mark.parametrize(("model", "args", "message"), [
    ("tiny", ["--task", "t2v", "--num-frames", "9", "--ulysses", "4"],
     "layout --ulysses 4 needs 4 processes but the job has 2"),
    ("three_heads", ["--task", "t2v", "--num-frames", "9", "--ulysses", "2"],
     "--ulysses 2 does not divide the model's 3 attention heads; use one of [1, 3]"),
    ("tiny", ["--task", "t2v", "--num-frames", "1", "--ulysses", "2"],
     "--ulysses 2 is more ranks than the 1 latent frames"),
], ids=["world", "heads", "frames"])
def test_bad_layout_fails_on_every_rank_with_one_line(request: pytest.FixtureRequest, tmp_path: Path,
                                                      model: str, args: list[str], message: str) -> None:
    out = tmp_path / "never.mp4"
    # torchrun stops the other ranks at its next check after the first one fails; checking every 8 s lets
    # each rank reach (and report) the layout check on its own, which is what this test is about (at 3 s a
    # busy machine sometimes started the second rank too late and the test failed on the race).
    returncode, stderr = torchrun_generate(request.getfixturevalue(model), 2, *args, "--cfg", "1",
                                           "--out", str(out), monitor_interval=8)
    assert returncode != 0
    errors = [line for line in stderr.splitlines() if line.startswith("pusa-fw: error:")]
    assert len(errors) == 2, stderr[-3000:]  # one line from each rank
    assert all(message in line for line in errors), errors
    assert "InputError" not in stderr, stderr[-3000:]  # no rank printed a traceback of the error
    exited_2 = set(re.findall(r"local_rank: (\d+)\)\s*\n\s*exitcode\s*:\s*2\b", stderr))
    assert exited_2 == {"0", "1"}, stderr[-3000:]  # torchrun's report: each rank exited with status 2
    assert not out.exists()
