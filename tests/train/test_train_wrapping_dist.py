"""DDP and FSDP2 wrapping on 2 gloo ranks (one torchrun launch of `wrap_dist_worker.py`).

- FSDP2 gradient accumulation (review F2): between micro-steps no parameter holds an unsharded gradient
  (neither ``_unsharded_param.grad`` nor FSDP2's ``unsharded_accumulated_grad`` in the reduce dtype), every
  gradient is a DTensor of the shard's size, and the accumulated gradient equals one big batch's.
- DDP (F9): the frozen tensors and the buffers are in DDP's ignore list and are not broadcast, no buffer
  broadcast before each forward, and the trainable tensors are still synced and reduced exactly.
- FSDP2 fallback build (F10): every rank ends with rank 0's weights, without a whole-model ``.to``.

What a CPU test cannot show: device memory (the 56 GB of unsharded fp32 gradients a 14B full fine-tune
would keep per GPU, and the per-group device moves of the fallback) and NCCL traffic.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import wrap_dist_worker as worker
from pusa_fw_train.wrapping import ignore_frozen_in_ddp

LAUNCH_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    from pusa_fw_wan.parallel.launch import run_torchrun

    out = tmp_path_factory.mktemp("wrap_dist")
    try:
        result = run_torchrun([str(Path(worker.__file__)), str(out)], nproc=2, timeout=LAUNCH_TIMEOUT_S,
                              env={"PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        pytest.fail(f"torchrun did not finish within {LAUNCH_TIMEOUT_S} s (a hang)")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("scenario", ["fsdp_fp32", "fsdp_bf16"])
def test_fsdp2_accumulation_keeps_only_sharded_gradients(reports: list[dict], scenario: str) -> None:
    for rank, report in enumerate(reports):
        run = report[scenario]
        assert run["unsharded"] == [], f"rank {rank} kept unsharded gradients of {run['unsharded']}"
        assert run["sharded_ok"], f"rank {rank}: a gradient is not a 1/N DTensor shard after micro-step 1"
        assert run["names"]


def test_fsdp2_accumulation_equals_one_big_batch(reports: list[dict]) -> None:
    for report in reports:
        run = report["fsdp_fp32"]
        # fp32 sums in another order: a few ulps of the largest gradient
        assert run["max_error"] <= 1e-6 * max(run["max_grad"], 1.0), run


def test_ddp_ignores_the_frozen_base_and_buffers_and_still_syncs_the_trainable(reports: list[dict]) -> None:
    frozen = {f"blocks.{i}.{kind}" for i in range(3) for kind in ("weight", "bias")}
    for report in reports:
        run = report["ddp"]
        assert set(run["ignored"]) == frozen | {"shift"}
        assert run["broadcast_buffers"] is False
        assert run["frozen_differs_across_ranks"], "DDP broadcast a frozen tensor at start-up"
        assert run["trainable_synced"], "DDP no longer gives every rank rank 0's trainable tensors"
        assert run["grad_error"] <= 1e-6
        assert run["frozen_grads"] == []


def test_fsdp2_fallback_gives_every_rank_rank0_weights_without_a_whole_model_move(reports: list[dict]) -> None:
    for report in reports:
        assert report["fallback"]["equal_rank0"]
        assert not report["fallback"]["whole_model_to"]


def test_ddp_ignore_list_merges_names_set_before() -> None:
    """Block swap sets its swapped names first; the frozen-tensor list must not overwrite them."""
    from torch.nn.parallel import DistributedDataParallel

    model = worker.TinyBlocks()
    model.blocks[1].requires_grad_(False)
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ["blocks.2.weight"])
    ignored = ignore_frozen_in_ddp(model)
    assert ignored == ["blocks.1.bias", "blocks.1.weight", "blocks.2.weight", "shift"]
    assert sorted(model._ddp_params_and_buffers_to_ignore) == ignored
