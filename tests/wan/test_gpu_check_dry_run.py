"""``benchmarks/gpu_check.py``: the plan (``--dry-run``), the fail-fast without CUDA, and every part's own
code run on the CPU at a tiny width (``--device cpu --tiny``), the lines only a GPU can give marked so."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def gpu_check(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name in [n for n in sys.modules if n == "gpu_check" or n.startswith("gpucheck_")]:
        monkeypatch.delitem(sys.modules, name)
    return importlib.import_module("gpu_check")


def test_dry_run_prints_the_plan(gpu_check, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_check.main(["--dry-run"]) is None
    out = capsys.readouterr().out
    for name, _, cuda_only in gpu_check.PLAN:
        assert name in out and all(check in out for check in cuda_only)
    assert len(gpu_check.PLAN) == 7 and sum(e for _, e, _ in gpu_check.PLAN) < gpu_check.DEFAULT_BUDGET_S


def test_without_cuda_it_fails_fast_and_says_what_to_run(
    gpu_check, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as raised:
        gpu_check.main([])
    err = capsys.readouterr().err
    assert raised.value.code == 2 and "torch.cuda.is_available() is False" in err
    assert "--device cpu --tiny" in err
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cpu"])  # the 14B width on a CPU: refused, --tiny named
    assert "add --tiny" in capsys.readouterr().err


def test_a_part_that_raises_is_an_error_line_and_the_budget_skips(gpu_check, tmp_path: Path) -> None:
    from gpucheck_common import ERROR, SKIPPED, TINY, Report, run_part

    report = Report(torch.device("cpu"), TINY, tmp_path / "r.json")

    def broken() -> None:
        raise RuntimeError("Expected all tensors to be on the same device")

    run_part(report, "first", 1.0, None, broken)
    run_part(report, "second", 1.0, None, lambda: report.add("second", "ran", 1, passed=True))
    run_part(report, "third", 1e9, 0.0, lambda: report.add("third", "ran", 1, passed=True))
    statuses = [(line.part, line.status) for line in report.lines]
    assert statuses == [("first", ERROR), ("second", "PASS"), ("third", SKIPPED)]
    saved = json.loads((tmp_path / "r.json").read_text())
    assert not saved["ok"] and "same device" in saved["lines"][0]["detail"]
    assert "RuntimeError" in saved["parts"]["first"]["traceback"]


def test_master_reads_counts_compute_not_the_swaps_own_copies(gpu_check) -> None:
    from gpucheck_train import MasterReads

    master, x = torch.randn(4, 3), torch.randn(2, 3)
    with MasterReads([master]) as watcher:
        copy = master.to("cpu", copy=True)  # block swap's copy: not a read
        master.detach().t()  # a view: not a read
        torch.nn.functional.linear(x, copy)
    assert watcher.reads == {}
    with MasterReads([master]) as watcher:
        torch.nn.functional.linear(x, master)  # a block computing with its host master: the F1 crash on CUDA
        master.to(torch.bfloat16)  # a dequantisation of the master: also a read
    assert sum(watcher.reads.values()) == 2


def test_tiny_cpu_run_gives_every_cpu_line_and_marks_the_rest(
    gpu_check, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gpucheck_common import NEEDS_CUDA

    path = tmp_path / "report.json"
    report = gpu_check.main(["--device", "cpu", "--tiny", "--json", str(path)])
    saved = json.loads(path.read_text())
    assert saved == json.loads(json.dumps(report.as_dict()))
    lines = {(line.part, line.check): line for line in report.lines}
    bad = [(k, v.status, v.detail) for k, v in lines.items() if v.status not in ("PASS", "INFO", NEEDS_CUDA)]
    assert not bad and saved["ok"]
    assert set(report.parts) == {name for name, _, _ in gpu_check.PLAN}
    plan = {name: cuda_only for name, _, cuda_only in gpu_check.PLAN}
    for (part, check), line in lines.items():  # what a CPU cannot give is what the plan says
        listed = any(entry in check for entry in plan[part])
        assert (line.status == NEEDS_CUDA) == listed == (line.cpu == NEEDS_CUDA), (part, check)
    for part, entries in plan.items():
        assert all(any(entry in check for p, check in lines if p == part) for entry in entries), part
    must_pass = [
        ("forward bf16", "SDPA backend (aten op)"),
        ("forward bf16", "all-equal per-frame == scalar sigmas (bit)"),
        ("forward bf16", "flash-forced forward"),
        ("fp8 storage", "fp8 vs bf16 output cosine"),
        ("fp8 storage", "fp8 + merged LoRA changes the output"),
        ("LoRA step (trainer)", "bfloat16 base: bf16 autocast, finite loss, LoRA grads"),
        ("LoRA step (trainer)", "float8_e4m3fn base: bf16 autocast, finite loss, LoRA grads"),
        ("swap + chunks + offload", "no compute reads a host master (F1)"),
        ("swap + chunks + offload", "loss and LoRA grads == resident (bit)"),
        ("swap + chunks + offload", "swapped block copies alive at once"),
        ("NCCL + FSDP2 + DCP", "MixedPrecisionPolicy: bf16 params in compute, fp32 sharded grads"),
        ("NCCL + FSDP2 + DCP", "sharded loss vs unsharded (rel.)"),
        ("NCCL + FSDP2 + DCP", "AdamW state + factors restored exactly"),
        ("NCCL + FSDP2 + DCP", "2 steps after resume: updates vs uninterrupted (rel.)"),
        ("NCCL + FSDP2 + DCP", "control: fresh AdamW after resume is detected (rel.)"),
        ("block offload (inference)", "L = 72: offloaded == resident (bit)"),
        ("block offload (inference)", "L = 72: blocks on the device at a block start (bookkeeping)"),
    ]
    for key in must_pass:
        assert lines[key].status == "PASS", (key, lines[key])
    assert lines[("NCCL + FSDP2 + DCP", "2 steps after resume: updates vs uninterrupted (rel.)")].value == 0.0
    out = capsys.readouterr().out
    assert "needs CUDA" in out and "a CPU run cannot give" in out
