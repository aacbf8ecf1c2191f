"""Shard-only FSDP2 builds: under ``distributed = "fsdp"`` a rank builds the model on meta, shards it, and
fills only its own shards (from the checkpoint, reading only its rows; or from the seeded init), and the
result equals the one-process model bit for bit.

One torchrun launch (`shard_load_worker.py`, gloo, 2 CPU ranks) builds three runs: a LoRA on a bfloat16
base from a checkpoint, a LoRA continued from a LoRA file on a float32 base, and a full fine-tune of a
random init. What a CPU test cannot show (CUDA memory, NCCL) is stated in
`pusa_fw_train.sharded_build` and `pusa_fw_wan.parallel.shard_load`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import shard_load_worker as worker
from pusa_fw_train.adapter import get_train_adapter
from pusa_fw_train.build import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

LAUNCH_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pusa_fw_wan.parallel.launch import run_torchrun

    out = tmp_path_factory.mktemp("shard_load")
    worker.write_checkpoint(out)  # once, before the ranks start
    worker.write_lora(out)
    try:
        result = run_torchrun([str(Path(worker.__file__)), str(out)], nproc=2, timeout=LAUNCH_TIMEOUT_S,
                              env={"PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        pytest.fail(f"torchrun did not finish within {LAUNCH_TIMEOUT_S} s (a hang)")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def _reports(out: Path, name: str) -> list[dict]:
    return [json.loads((out / f"{name}-rank{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.parametrize("name", worker.SCENARIOS)
def test_shard_only_build_equals_the_one_process_model_exactly(launched: Path, name: str) -> None:
    config = worker.scenario_config(launched, name, distributed="none")
    model, _ = build_model(config, get_train_adapter(config.model.backbone), "cpu")
    want = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    got = load_file(str(launched / f"{name}.safetensors"))
    assert set(got) == set(want)
    for key, tensor in want.items():
        assert got[key].dtype == tensor.dtype, key
        assert torch.equal(got[key], tensor.detach()), key
    if name == "lora_bf16_checkpoint":
        assert got["blocks.0.ffn.0.base_layer.weight"].dtype == torch.bfloat16
    if name == "lora_fp32_checkpoint_init_from":  # the LoRA file's factors, not a fresh init
        assert got["blocks.0.ffn.0.lora_B.trained.weight"].abs().max() > 0


@pytest.mark.parametrize("name", ["lora_bf16_checkpoint", "lora_fp32_checkpoint_init_from"])
def test_a_rank_reads_and_keeps_only_its_shards_of_a_checkpoint(launched: Path, name: str) -> None:
    reports = _reports(launched, name)
    file = launched / "checkpoint" / "diffusion_pytorch_model.safetensors"
    from pusa_fw_wan.weights.safetensors import read_header

    tensor_bytes = sum(info.end - info.begin for info in read_header(file).values())
    # every byte of the file's tensors is read by exactly one rank: half each, never the whole file
    assert sum(report["bytes_read"] for report in reports) == tensor_bytes
    for report in reports:
        assert report["bytes_read"] <= 0.55 * tensor_bytes
        assert report["bytes_kept"] <= 0.55 * report["bytes_full"]
        assert report["full_tensors"] == [], "a rank held a whole tensor it shards"
        for key, (local, full) in report["parameters"].items():
            if full >= 2 and "modulation" not in key:  # modulation [1, 6, dim]: one row, on rank 0
                assert local < full, key


def test_a_random_init_keeps_only_the_shards_but_draws_each_whole_tensor(launched: Path) -> None:
    reports = _reports(launched, "full_random_init")
    total = reports[0]["bytes_full"]
    assert sum(report["bytes_kept"] for report in reports) == total
    for report in reports:
        assert report["bytes_kept"] <= 0.55 * total
        assert report["bytes_read"] == total  # the draws need every value of a tensor, one at a time


def test_the_shard_only_build_refuses_the_default_init_in_one_line() -> None:
    """`load_shards` fills a meta model with the seeded random init only, so ``init="default"`` is refused."""
    from pusa_fw.errors import InputError
    from pusa_fw_wan.testing.train import TINY_ARCHITECTURE

    adapter = get_train_adapter("wan2.1-t2v")
    with pytest.raises(InputError) as error:
        adapter.build_model(None, dict(TINY_ARCHITECTURE), 0, device="meta", init="default")
    message = str(error.value)
    assert message.startswith("init 'default' cannot be built shard-only") and "\n" not in message
    model = adapter.build_model(None, dict(TINY_ARCHITECTURE), 0, device="meta", init="random")
    assert all(parameter.is_meta for parameter in model.parameters())
