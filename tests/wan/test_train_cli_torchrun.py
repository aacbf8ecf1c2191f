"""``torchrun --nproc_per_node 2 -m pusa_fw train``: the command line trains under torchrun like one process.

A tiny LoRA run file (global batches of 3 over 2 ranks, so one rank pads) is trained by the CLI under
torchrun (DDP, gloo) and by one in-process `Trainer`; the trained adapters agree to float rounding. With
``distributed = "none"`` under torchrun the ranks exit 2 with one line each.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pusa_fw_wan.parallel.launch import TorchrunResult, run_torchrun

LAUNCH_TIMEOUT_S = 240
RUN_OVERRIDES = {"max_steps": 2, "data.batch_size": 3, "data.options.count": 5}


def _torchrun_cli(*args: str) -> TorchrunResult:
    try:
        return run_torchrun(["-m", "pusa_fw", *args], nproc=2, timeout=LAUNCH_TIMEOUT_S,
                            env={"PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        pytest.fail(f"torchrun -m pusa_fw {' '.join(args)} did not finish within {LAUNCH_TIMEOUT_S} s")


def _write_run_file(path: Path, output_dir: Path, **overrides) -> Path:
    from pusa_fw_wan.testing.train import tiny_config

    config = tiny_config(output_dir, **RUN_OVERRIDES, **overrides)
    path.write_text(config.model_dump_json())
    return path


def _latest_adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    checkpoints = run_dir / "checkpoints"
    latest = (checkpoints / "latest").read_text().strip()
    return load_file(str(checkpoints / Path(latest).name / "adapter.safetensors"))


def test_train_cli_under_torchrun_matches_one_process(tmp_path: Path, one_thread) -> None:
    from pusa_fw_wan.testing.train import tiny_config
    from pusa_fw_train import Trainer

    run_file = _write_run_file(tmp_path / "run.json", tmp_path / "two-ranks", distributed="ddp")
    launched = _torchrun_cli("train", "--config", str(run_file), "--no-progress")
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "step-0000002" in launched.stdout

    Trainer(tiny_config(tmp_path / "one-process", **RUN_OVERRIDES, distributed="none")).run()
    want = _latest_adapter(tmp_path / "one-process")
    got = _latest_adapter(tmp_path / "two-ranks")
    assert set(got) == set(want) and want
    initial_b = max(tensor.abs().max().item() for name, tensor in want.items() if "lora_B" in name)
    assert initial_b > 0, "the LoRA did not train, so the comparison would prove nothing"
    for name, tensor in want.items():
        error = (got[name] - tensor).abs().max().item()
        assert error <= 1e-5, f"{name} differs by {error}"


def test_train_cli_refuses_strategy_none_under_torchrun(tmp_path: Path) -> None:
    run_file = _write_run_file(tmp_path / "run.json", tmp_path / "run", distributed="none")
    launched = _torchrun_cli("train", "--config", str(run_file), "--no-progress")
    assert launched.returncode != 0
    # Each rank prints the one line and exits 2; torchrun stops the other rank as soon as one exits,
    # so the second line may be cut off (that every rank raises is tested in test_train_distributed).
    errors = [line for line in launched.stderr.splitlines() if line.startswith("pusa-fw: error:")]
    assert 1 <= len(errors) <= 2, launched.stderr[-2000:]
    assert all("distributed='none' but 2 processes were launched" in line for line in errors)
    assert "exitcode: 2" in launched.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
