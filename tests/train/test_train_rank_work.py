"""Two gloo ranks (torchrun, CPU): a stop signal reaching one rank mid-step stops both at the same micro-step
with the last finished step saved and a bit-exact resume; only rank 0 builds the render setup and copies
checkpoint tensors to the CPU; rank-0 work is waited for on the long-timeout gloo host group; validation is
split over the ranks and equals the single-process one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import rank_work_worker as worker
import torch
from safetensors.torch import load_file

from pusa_fw_wan.parallel.launch import run_torchrun

LAUNCH_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    from pusa_fw_toy.model_dir import build_toy_dir

    out = tmp_path_factory.mktemp("rank_work")
    toy_dir = build_toy_dir(out / "toy", randomise=True, seed=3, dim=32, num_heads=2, num_layers=2,
                            freq_dim=32)
    try:
        launched = run_torchrun([str(Path(worker.__file__)), str(out), str(toy_dir)], nproc=2,
                                timeout=LAUNCH_TIMEOUT_S, env={"PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        pytest.fail(f"torchrun did not finish within {LAUNCH_TIMEOUT_S} s (a hang)")
    assert launched.returncode == 0, launched.stderr[-4000:]
    return out, [json.loads((out / f"report.rank{rank}.json").read_text()) for rank in (0, 1)]


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_a_signal_on_one_rank_stops_both_mid_step_and_the_resume_is_bit_exact(reports):
    out, (rank0, rank1) = reports
    # SIGUSR1 during step index 2, micro-step 1 (rank 1 only); the all-reduce launched before step index 3's
    # micro-step 0 carries it and is read before micro-step 1: step index 3 is dropped half done.
    for report in (rank0, rank1):
        assert report["stopped_step"] == 3 and report["resumed_step"] == 5
    assert rank0["stopped_checkpoint"] == "step-0000003"
    states = [json.loads((out / run / "checkpoints" / "step-0000003" / "trainer_state.json").read_text())
              for run in ("straight", "stopped")]
    assert [(state["step"], state["epoch"], state["batch"]) for state in states] == [
        (states[0]["step"], states[0]["epoch"], states[0]["batch"])] * 2, "the data position of step 3's end"
    for file in ("adapter.safetensors", "optimizer.safetensors"):
        straight = load_file(str(out / "straight" / "checkpoints" / "step-0000005" / file))
        resumed = load_file(str(out / "stopped" / "checkpoints" / "step-0000005" / file))
        assert straight.keys() == resumed.keys()
        assert all(torch.equal(resumed[name], tensor) for name, tensor in straight.items()), file


def test_only_rank_0_copies_full_tensors_to_the_cpu(reports):
    _, (rank0, rank1) = reports
    assert rank0["full_tensor"] == [list(map(float, range(8)))] * 2
    assert rank1["full_tensor"] == [None, None]


def test_only_rank_0_builds_the_render_setup_and_the_others_wait_on_the_host_group(reports):
    out, (rank0, rank1) = reports
    assert rank0["built"] == {"text_encoder": 1, "codec": 1} and not rank0["renders_setup_is_none"]
    assert rank1["built"] == {"text_encoder": 0, "codec": 0} and rank1["renders_setup_is_none"]
    assert rank0["render_files"] == ["t2v-p0.mp4"]
    for report in (rank0, rank1):
        assert {"backend": "gloo", "timeout_s": 4321.0} in report["new_groups"]
        assert report["barrier_groups"] == ["host"], "rank-0 work must not wait in a device (NCCL) barrier"


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_split_validation_equals_the_single_process_one(reports, tmp_path, strategy):
    from pusa_fw_train import Trainer

    _, (rank0, rank1) = reports
    assert rank0[f"validation_{strategy}"] == rank1[f"validation_{strategy}"], "the same result on every rank"
    rows = rank0["validation_rows"]  # sigma rows of all plans: forwards per held-out sample
    for report in (rank0, rank1):  # 3 samples over 2 ranks: 2 rounds each (rank 1 pads one), not 3
        assert report[f"validation_forwards_{strategy}"] == 2 * rows
    held = {"validation.every": 100, "validation.num_samples": 3, "data.options.count": 7}
    mode = {"mode": "full"} if strategy == "fsdp" else {}
    expected = Trainer(worker.tiny(tmp_path, "one", **held, **mode, distributed="none")).validate()
    got = rank0[f"validation_{strategy}"]
    assert got.keys() == expected.keys() and len(expected) > 3
    # The per-sample losses are the same forwards; only the order of the float64 sums differs.
    assert got == pytest.approx(expected, rel=1e-12, abs=0)
