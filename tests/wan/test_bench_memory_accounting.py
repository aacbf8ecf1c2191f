"""The memory model's accounting on the meta device equals the same accounting on real CPU tensors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from pusa_fw_wan import WanConfig

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_memory.py"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bench_memory():
    spec = importlib.util.spec_from_file_location("bench_memory_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


CONFIG = WanConfig(dim=256, ffn_dim=512, num_heads=2, text_dim=64, text_len=16, num_layers=2)


@pytest.mark.parametrize(
    ("mode", "weights_dtype", "rank"),
    [
        ("inference", "bfloat16", None),
        ("inference", "float8_e4m3fn", None),
        ("train", "bfloat16", 4),
        ("train_ckpt", "float8_e4m3fn", 4),
    ],
)
def test_meta_accounting_equals_real_tensors(bench_memory, mode, weights_dtype, rank) -> None:
    meta = bench_memory.build(2, weights_dtype, rank, config=CONFIG)
    real = bench_memory.build(2, weights_dtype, rank, config=CONFIG, device="cpu")
    on_meta = bench_memory.run_blocks(meta, (4, 6), mode, frames=3)
    on_cpu = bench_memory.run_blocks(real, (4, 6), mode, frames=3)
    assert on_meta == on_cpu and on_meta["peak"] > 0


def test_fit_is_exact_on_a_line_and_reports_its_residual(bench_memory) -> None:
    exact = bench_memory.fit([10, 20, 40], [3.0 + 2.0 * n for n in (10, 20, 40)])
    assert exact["a"] == pytest.approx(3.0) and exact["b"] == pytest.approx(2.0) and exact["fit_error"] < 1e-9
    bent = bench_memory.fit([10, 20, 40], [10.0, 20.0, 80.0])
    assert bent["fit_error"] > 0.05


def test_activation_offload_keeps_no_block_input_on_the_device(bench_memory, monkeypatch) -> None:
    monkeypatch.setattr(bench_memory, "OFFLOAD_MIN_BYTES", 0)  # the tiny model's tensors are all small
    frames, grid = 3, (4, 6)
    tokens = frames * grid[0] * grid[1]
    passes = {}
    # 2 and 3 blocks: the text, RoPE and time tensors given to every block are saved more than once in both,
    # so they stay on the device in both passes and only the per-block terms differ.
    for layers in (2, 3):
        config = CONFIG.model_copy(update={"num_layers": layers})
        model = bench_memory.build(layers, "bfloat16", 4, config=config)
        passes[layers] = {
            mode: bench_memory.run_blocks(model, grid, mode, frames=frames)
            for mode in ("train_ckpt", "train_ckpt_offload")
        }
    kept = {mode: passes[3][mode]["kept"] - passes[2][mode]["kept"] for mode in passes[2]}
    assert kept["train_ckpt"] == tokens * CONFIG.dim * 4  # each checkpointed block keeps its fp32 input
    assert kept["train_ckpt_offload"] == 0  # ... which offload moves to the host
    host = passes[3]["train_ckpt_offload"]["host_peak"] - passes[2]["train_ckpt_offload"]["host_peak"]
    assert host == tokens * CONFIG.dim * 4
    assert passes[2]["train_ckpt"]["host_peak"] == 0


def test_goals_say_met_or_missed_by_how_much(bench_memory) -> None:
    gib = 2**30
    rows = [
        {"what": "LoRA r512", "resolution": "480p", "base": "bfloat16", "setup": "ckpt, 1 GPU",
         "bytes": 90 * gib, "host_bytes": 0},
        {"what": "LoRA r512", "resolution": "480p", "base": "float8_e4m3fn", "setup": "ckpt, block swap 38",
         "bytes": 70 * gib, "host_bytes": 40 * gib},
        {"what": "LoRA r512", "resolution": "480p", "base": "bfloat16", "setup": "ckpt, 8-GPU FSDP2",
         "bytes": 20 * gib, "host_bytes": 0},
        {"what": "LoRA r64", "resolution": "480p", "base": "float8_e4m3fn", "setup": "ckpt, block swap 38",
         "bytes": 26.5 * gib, "host_bytes": 13 * gib},
        {"what": "LoRA r64", "resolution": "512sq", "base": "float8_e4m3fn", "setup": "ckpt, block swap 38",
         "bytes": 10 * gib, "host_bytes": 13 * gib},
    ]
    r512, r64 = bench_memory.goals(rows)
    assert r512.startswith("LoRA r512 on one 80 GB GPU: met") and "block swap 38: 70.0 GiB" in r512
    assert r64.startswith("LoRA r64 on one 24 GB GPU: missed by 2.5 GiB")


def test_token_chunks_lower_the_backward_peak_of_a_checkpointed_block(bench_memory, monkeypatch) -> None:
    monkeypatch.setattr(bench_memory, "OFFLOAD_MIN_BYTES", 0)
    peaks = []
    for chunks in (1, 3):
        model = bench_memory.build(2, "bfloat16", 4, config=CONFIG, token_chunks=chunks)
        passes = bench_memory.run_blocks(model, (4, 6), "train_ckpt_offload", frames=3)
        peaks.append(passes["peak"])
    assert peaks[1] < peaks[0]
