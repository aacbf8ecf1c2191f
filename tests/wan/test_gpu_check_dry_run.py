"""``benchmarks/gpu_check.py --dry-run``: the GPU check's own code, on the CPU at a tiny size."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"

pytestmark = pytest.mark.usefixtures("one_thread")


def load_script(name: str, monkeypatch: pytest.MonkeyPatch):
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_gpu_check_dry_run_reports_every_part(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load_script("gpu_check", monkeypatch)
    report = module.main(["--dry-run", "--json", str(tmp_path / "report.json")])
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(json.dumps(report))
    rows = {(row["what"], row["weights_dtype"], row["sigmas"]) for row in report["rows"]}
    for weights_dtype in ("bfloat16", "float8_e4m3fn"):
        assert ("forward", weights_dtype, "per-frame") in rows and (
            "forward",
            weights_dtype,
            "scalar",
        ) in rows
        assert ("LoRA r8 step", weights_dtype, "per-frame") in rows
    for row in report["rows"]:
        assert row["seconds"] > 0 and row["projected_bytes"] > 0 and row["mfu"] is None  # no CPU peak known
    # a LoRA step needs more than a forward: the projection (tensor accounting) says so
    forward = next(r for r in report["rows"] if r["what"] == "forward" and r["weights_dtype"] == "bfloat16")
    step = next(
        r for r in report["rows"] if r["what"].startswith("LoRA") and r["weights_dtype"] == "bfloat16"
    )
    assert step["projected_bytes"] > forward["projected_bytes"]
    assert report["dcp_resume"]["exact"], report["dcp_resume"]
    assert report["block_offload"]["offloaded_s"] > 0
    assert "next step after resume equal" in capsys.readouterr().out


def test_gpu_check_without_a_gpu_says_to_dry_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    module = load_script("gpu_check_nogpu", monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as raised:
        module.main([])
    assert raised.value.code == 2 and "--dry-run" in capsys.readouterr().err
