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
