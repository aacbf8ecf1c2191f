"""``generate --fsdp --lora`` loads shard-only: each rank reads its own rows of the DiT, adds the LoRA
deltas of those rows (or keeps the factors of a low-precision layer for its compute-time merge), and the
result equals one process with the same LoRAs bit for bit.

One torchrun launch (`fsdp_lora_worker.py`, gloo, 2 CPU ranks) loads the tiny DiT with two LoRA files in
official layouts (per-module alphas, ``diff``/``diff_b``, diffusers names, a conv, a ``lora_B`` bias;
strengths 1.4 and 0.7) in four storage setups, then runs ``pusa-fw generate --fsdp`` with both LoRAs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import fsdp_lora_worker as worker
from pusa_fw.cli import main
from test_parallel_generate import frames_of, scaled_fp8_copy

from pusa_fw_wan.testing.tiny import TinyWan

pytestmark = pytest.mark.usefixtures("one_thread")

LAUNCH_TIMEOUT_S = 300


def same_bits(got: torch.Tensor, want: torch.Tensor) -> bool:
    if got.dtype != want.dtype or got.shape != want.shape:
        return False
    if got.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        return torch.equal(got.view(torch.uint8), want.view(torch.uint8))
    return torch.equal(got, want)


@pytest.fixture(scope="module")
def launched(tiny: TinyWan, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pusa_fw_wan.parallel.launch import run_torchrun

    out = tmp_path_factory.mktemp("fsdp_lora")
    shutil.copytree(tiny.root, out / "tiny")
    scaled_fp8_copy(tiny, out / "tiny_fp8")
    worker.write_loras(out, tiny.root)
    (out / "tiny_args.json").write_text(json.dumps(tiny.cli_args()))
    try:
        result = run_torchrun([str(Path(worker.__file__)), str(out)], nproc=2, timeout=LAUNCH_TIMEOUT_S,
                              env={"PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        pytest.fail(f"torchrun did not finish within {LAUNCH_TIMEOUT_S} s (a hang)")
    assert result.returncode == 0, result.stderr[:12000]
    return out


def one_process(out: Path, case: str, loras: bool = True) -> torch.nn.Module:
    """The case's DiT loaded whole in one process, the LoRAs applied and merged as ``generate`` does."""
    from pusa_fw_wan.dit.model import WanDiT
    from pusa_fw_wan.lora.apply import apply_loras

    dtype, weights_dtype, folder = worker.CASES[case]
    model = WanDiT.from_pretrained(out / folder, dtype=getattr(torch, dtype), weights_dtype=weights_dtype)
    model = model.eval().requires_grad_(False)
    if loras:
        apply_loras(model, worker.lora_specs(out), merge=True)
    return model


@pytest.mark.parametrize("case", worker.CASES)
def test_fsdp_lora_load_equals_one_process_exactly(launched: Path, case: str) -> None:
    ranks = [load_file(str(launched / f"{case}-rank{rank}.safetensors")) for rank in (0, 1)]
    assert torch.equal(ranks[0]["velocity"], ranks[1]["velocity"])
    got = {name: torch.cat([shards[name] for shards in ranks]) for name in ranks[0] if name != "velocity"}
    got["velocity"] = ranks[0]["velocity"]
    reference = one_process(launched, case)
    inputs = worker.probe_inputs(reference.config.text_dim)
    with torch.no_grad():
        velocity, plain = reference(*inputs), one_process(launched, case, loras=False)(*inputs)
    assert torch.equal(got["velocity"], velocity), (got["velocity"] - velocity).abs().max()
    assert (velocity - plain).abs().max() > 1e-2  # the LoRAs change the model clearly
    want = {name.replace(".base_layer", ""): parameter for name, parameter in reference.named_parameters()
            if ".lora_" not in name}
    assert set(got) - {"velocity"} == set(want)
    for name, parameter in want.items():
        assert same_bits(got[name], parameter), name  # merged rows (or untouched low-precision bits)
    base = dict(one_process(launched, case, loras=False).named_parameters())["blocks.0.self_attn.q.weight"]
    # low precision keeps the stored bits (factors merged at compute time); plain layers merge the rows
    assert same_bits(got["blocks.0.self_attn.q.weight"], base) == (case in ("bf16_storage", "fp8_file"))


@pytest.mark.parametrize("case", ["float32", "fp8_file"])
def test_a_rank_reads_and_keeps_about_half_the_dit_and_the_loras_whole(launched: Path, case: str) -> None:
    from pusa_fw_wan.weights.safetensors import read_header

    reports = [json.loads((launched / f"{case}-rank{rank}.json").read_text()) for rank in (0, 1)]
    file = launched / worker.CASES[case][2] / "diffusion_pytorch_model.safetensors"
    tensor_bytes = sum(info.end - info.begin for key, info in read_header(file).items()
                       if not key.endswith(".scale_weight"))  # the fp8 file's small row scales: read whole
    lora_bytes = sum(info.end - info.begin for name in worker.STRENGTHS  # factors and diffs, not alphas
                     for key, info in read_header(launched / name).items() if not key.endswith(".alpha"))
    assert sum(report["bytes_read"] for report in reports) == tensor_bytes  # every byte read by one rank
    for report in reports:
        assert report["bytes_read"] <= 0.55 * tensor_bytes
        assert report["bytes_kept"] <= 0.55 * report["bytes_full"]
        assert report["full_tensors"] == []
        assert report["lora_bytes_read"] == lora_bytes
        assert "patch_embedding" in report["lora_modules"] and "blocks.0.ffn.2" in report["lora_modules"]


def test_generate_fsdp_lora_equals_one_process(launched: Path, tiny: TinyWan, tmp_path: Path) -> None:
    latents, video = tmp_path / "single.safetensors", tmp_path / "single.mp4"
    assert main(worker.generate_args(launched, tiny.cli_args(), latents, video)) == 0
    got, want = load_file(str(launched / "fsdp.safetensors")), load_file(str(latents))
    assert torch.equal(got["latents"], want["latents"]), (got["latents"] - want["latents"]).abs().max()
    assert np.array_equal(frames_of(launched / "fsdp.mp4"), frames_of(video))
    record = json.loads((launched / "fsdp.json").read_text())
    assert record["parallel"]["fsdp"] is True and record["runtime"]["lora_merged"] is True
    assert [lora["strength"] for lora in record["loras"]] == list(worker.STRENGTHS.values())


def test_a_lora_that_does_not_fit_is_one_line_before_the_process_group(tiny: TinyWan, tmp_path: Path, capsys,
                                                                       monkeypatch) -> None:
    from safetensors.torch import save_file

    import pusa_fw_wan.parallel.runtime as runtime

    def started(*_args, **_kwargs):
        raise AssertionError("the process group started before the LoRA was checked")

    monkeypatch.setattr(runtime, "init_parallel", started)
    bad = tmp_path / "other_model.safetensors"
    save_file({"blocks.0.self_attn.q.lora_A.weight": torch.zeros(3, 7),
               "blocks.0.self_attn.q.lora_B.weight": torch.zeros(32, 3)}, str(bad))
    out = tmp_path / "never.mp4"
    args = worker.generate_args(tmp_path, tiny.cli_args(), tmp_path / "never.safetensors", out)
    args = [arg for arg in args if "_lora.safetensors" not in arg and arg != "--lora"]
    assert main([*args, "--fsdp", "--lora", f"{bad}:1.4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pusa-fw: error: LoRA file") and "do not fit the model" in err, err
    assert "\n" not in err and not out.exists()
