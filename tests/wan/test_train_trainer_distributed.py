"""The `Trainer` itself under ``torchrun --nproc_per_node 2`` (gloo, CPU): DDP for a LoRA and FSDP2 for a
full fine-tune end, after 3 steps on uneven global batches, where one process ends (weights, EMA, AdamW
state), to float tolerance."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
import train_trainer_worker as worker
from safetensors.torch import load_file

from pusa_fw_wan.parallel.launch import TorchrunResult, run_torchrun

LAUNCH_TIMEOUT_S = 240


def _tensors(checkpoint: Path, file: str) -> dict[str, torch.Tensor]:
    """A checkpoint file's tensors, or the same part of its DCP shards (FSDP2 on several ranks writes those;
    DCP keys optimizer moments by parameter path, which for these runs is the contract name)."""
    if not (checkpoint / "dcp").is_dir():
        return load_file(str(checkpoint / file))
    from pusa_fw_train.sharded import read_sharded_tensors

    part = {"model": "model", "adapter": "model", "ema": "ema", "optimizer": "optim"}[file.split(".")[0]]
    return read_sharded_tensors(checkpoint, part)


def _torchrun(out: Path, *phase: str) -> TorchrunResult:
    try:
        return run_torchrun([str(Path(worker.__file__)), str(out), *phase], nproc=2, timeout=LAUNCH_TIMEOUT_S,
                            env={"PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        pytest.fail(f"torchrun did not finish within {LAUNCH_TIMEOUT_S} s (a hang)")


@pytest.mark.slow  # ~35 s: one 2-process torchrun launch plus two reference runs
def test_trainer_under_torchrun_matches_one_process(tmp_path, one_thread):
    launched = _torchrun(tmp_path)
    assert launched.returncode == 0, launched.stderr[-3000:]
    for name, (strategy, mode) in worker.SCENARIOS.items():
        reference = worker.run_scenario(tmp_path, name, "none")
        distributed = tmp_path / f"{name}-{strategy}" / "checkpoints" / reference.name
        kind = "adapter" if mode == "lora" else "model"
        for file in (f"{kind}.safetensors", "ema.safetensors", "optimizer.safetensors"):
            expected, got = _tensors(reference, file), _tensors(distributed, file)
            assert expected.keys() == got.keys(), f"{name}/{file}: different tensors"
            for key, tensor in expected.items():
                torch.testing.assert_close(got[key], tensor, rtol=1e-5, atol=1e-6, msg=f"{name}/{file}:{key}")


@pytest.mark.slow  # ~60 s: two 2-process torchrun launches and the straight run
def test_fsdp_run_stopped_and_resumed_under_torchrun_ends_identical(tmp_path, one_thread):
    for phase in ("all", "pause", "resume"):
        launched = _torchrun(tmp_path, phase)
        assert launched.returncode == 0, f"{phase}: {launched.stderr[-3000:]}"
    straight = tmp_path / "fsdp_full-fsdp" / "checkpoints" / "step-0000003"
    assert (straight / "dcp").is_dir(), "FSDP2 on two ranks writes DCP shards"
    resumed = tmp_path / "fsdp_full-fsdp-resumed" / "checkpoints" / "step-0000003"
    for file in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        expected, got = _tensors(straight, file), _tensors(resumed, file)
        assert expected.keys() == got.keys()
        for key, tensor in expected.items():
            assert torch.equal(got[key], tensor), f"{file}:{key} differs after an FSDP2 resume"


@pytest.mark.slow  # ~50 s: one 2-process torchrun launch, one-process pauses, resumes and references
def test_resume_on_another_world_size_matches_one_process(tmp_path, one_thread):
    """Elastic resume, DDP (LoRA) and FSDP2 (full): 1 -> 2 ranks and 2 -> 1 rank, each paused after step 2,
    end where an uninterrupted single-process run ends, within the float bound of the 2-rank comparison."""
    from pusa_fw_train import Trainer

    for name in worker.SCENARIOS:
        Trainer(worker.scenario_config(tmp_path, name, suffix="-elastic12")).run(stop_at=2)
    launched = _torchrun(tmp_path, "elastic")
    assert launched.returncode == 0, launched.stderr[-3000:]
    for name, (strategy, mode) in worker.SCENARIOS.items():
        Trainer.resume(worker.scenario_config(tmp_path, name, suffix="-elastic21").output_dir).run()
        reference = worker.run_scenario(tmp_path, name, "none")
        kind = "adapter" if mode == "lora" else "model"
        for suffix in ("-elastic12", "-elastic21"):
            resumed = tmp_path / f"{name}-{strategy}{suffix}" / "checkpoints" / reference.name
            for file in (f"{kind}.safetensors", "ema.safetensors", "optimizer.safetensors"):
                expected, got = _tensors(reference, file), _tensors(resumed, file)
                assert expected.keys() == got.keys(), f"{name}{suffix}/{file}: different tensors"
                for key, tensor in expected.items():
                    torch.testing.assert_close(
                        got[key], tensor, rtol=1e-5, atol=1e-6, msg=f"{name}{suffix}/{file}:{key}"
                    )
