"""Distributed training on CPU with gloo and 2 processes under torchrun: DDP and FSDP2 equal one process.

One torchrun launch (`train_dist_worker.py`) trains every scenario; the tests compare its results with
the single-process reference computed here. Every launch has a timeout, so a hang fails the test.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
import train_dist_worker as worker
from safetensors.torch import load_file

from pusa_fw_wan.parallel.launch import TorchrunResult, run_torchrun

WORKER = Path(worker.__file__)
LAUNCH_TIMEOUT_S = 240


def torchrun(*args: str, nproc: int = 2) -> TorchrunResult:
    """Run the worker under ``torchrun --standalone``; a job past the limit is killed and fails the test."""
    try:
        return run_torchrun([str(WORKER), *args], nproc=nproc, timeout=LAUNCH_TIMEOUT_S,
                            env={"PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        pytest.fail(f"torchrun {' '.join(args)} did not finish within {LAUNCH_TIMEOUT_S} s (a hang)")


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("two_ranks")
    result = torchrun(str(out))
    progress = {path.name: path.read_text() for path in sorted(out.glob("progress.rank*.txt"))}
    assert result.returncode == 0, f"{progress}\n{result.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def single_process_reference() -> dict[str, tuple[dict[str, torch.Tensor], list[float]]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {scenario: worker.reference_run(scenario) for scenario in worker.SCENARIOS}
    finally:
        torch.set_num_threads(threads)


def _max_error(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> float:
    assert set(got) == set(want), f"names differ: {sorted(set(got) ^ set(want))[:4]}"
    return max((got[name] - want[name]).abs().max().item() for name in want)


@pytest.mark.parametrize("scenario", list(worker.SCENARIOS))
def test_two_ranks_match_one_process(scenario, two_rank_results, single_process_reference) -> None:
    """Same global batches: the same losses per step and the same trained weights (float tolerance)."""
    want_weights, want_losses = single_process_reference[scenario]
    report = json.loads((two_rank_results / f"{scenario}.json").read_text())
    assert report["world_size"] == 2
    assert len(report["losses"]) == len(want_losses)
    assert report["losses"] == pytest.approx(want_losses, rel=1e-5, abs=1e-6)
    got_weights = load_file(str(two_rank_results / f"{scenario}.safetensors"))
    initial = {name: p for name, p in worker.tiny_model(worker.SCENARIOS[scenario][1]).named_parameters()}
    moved = max((want_weights[name] - initial[name]).abs().max().item() for name in want_weights)
    assert moved > 1e-3, "the reference did not train, so the comparison would prove nothing"
    assert _max_error(got_weights, want_weights) <= 2e-5


@pytest.mark.parametrize("scenario", list(worker.SCENARIOS))
def test_gathered_checkpoint_resumes_the_same_step(scenario, two_rank_results) -> None:
    """Weights and optimizer state gathered on rank 0 and loaded on both ranks give the same next step."""
    report = json.loads((two_rank_results / f"{scenario}.json").read_text())
    straight = load_file(str(two_rank_results / f"{scenario}.safetensors"))
    resumed = load_file(str(two_rank_results / f"{scenario}.resumed.safetensors"))
    assert report["resumed_last_loss"] == report["losses"][-1]
    assert _max_error(resumed, straight) == 0.0


def test_uneven_sample_count_pads_and_does_not_hang(two_rank_results) -> None:
    """5 samples in batches of 3 over 2 ranks: both ranks run 2 steps (it finished), rank 1 padded."""
    from pusa_fw_train.sharding import shard_global_batch

    _, _, num_samples, batch_size = worker.SCENARIOS["ddp_lora_uneven"]
    batches = worker.global_batches(num_samples, batch_size)
    assert [len(batch) for batch in batches] == [3, 2]
    assert shard_global_batch(batches[0], 1, 2).is_real == (True, False)
    report = json.loads((two_rank_results / "ddp_lora_uneven.json").read_text())
    assert len(report["losses"]) == len(batches)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("none-under-torchrun", "InputError: strategy 'none' was given but 2 processes were launched"),
        ("ranks-disagree", "InputError: model structure (parameter names, shapes, trainable flags) differs"),
    ],
)
def test_bad_layout_fails_fast_on_every_rank(layout, message, two_rank_results) -> None:
    """Each rank raised the same one-line error (and the launch finished: nobody hung)."""
    for rank in range(2):
        text = (two_rank_results / f"bad-{layout}.rank{rank}.txt").read_text()
        assert text.startswith(message) and "\n" not in text, text
