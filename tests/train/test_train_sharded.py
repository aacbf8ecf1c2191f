"""DCP checkpoints (``checkpoint.format = "dcp"``, the default of FSDP2 on several ranks): tensors only, a
stopped and resumed run ends bit-identical, and the shards read back whole for exports and packing. The
multi-rank cases (each rank its own shards, resume on another world size) are the slow torchrun tests in
``tests/wan/test_train_trainer_distributed.py``."""

from __future__ import annotations

import pytest
import torch

from pusa_fw_train import Trainer
from pusa_fw_train.sharded import read_sharded_tensors
from pusa_fw_wan.testing.train import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_a_dcp_run_stopped_and_resumed_ends_bit_identical(tmp_path, mode):
    overrides = {"checkpoint.format": "dcp", "ema_decay": 0.9, "ptss.held_probability": 0.5}
    straight = Trainer(tiny_config(tmp_path / "straight", max_steps=4, mode=mode, **overrides))
    straight.run()
    Trainer(tiny_config(tmp_path / "paused", max_steps=4, mode=mode, **overrides)).run(stop_at=2)
    step_2 = tmp_path / "paused" / "checkpoints" / "step-0000002"
    assert (step_2 / "dcp").is_dir() and not list(step_2.glob("*.safetensors"))[1:], "only rng.safetensors"
    resumed = Trainer.resume(tmp_path / "paused")
    resumed.run()
    for name, tensor in straight.tensors.items():
        assert torch.equal(resumed.tensors[name], tensor), name
    final = tmp_path / "paused" / "checkpoints" / "step-0000004"
    model, ema = read_sharded_tensors(final, "model"), read_sharded_tensors(final, "ema")
    assert model.keys() == straight.tensors.keys() == ema.keys()
    assert all(torch.equal(model[name], tensor.detach()) for name, tensor in straight.tensors.items())
    assert all(torch.equal(ema[name], straight.ema.shadow[name]) for name in ema)
    stored = {path.name for path in (final / "dcp").iterdir()}
    assert stored and all(name.endswith(".distcp") or name == ".metadata" for name in stored)


def test_lora_exports_of_a_dcp_run_equal_those_of_a_safetensors_run(tmp_path, capsys):
    from safetensors import safe_open

    exports = {}
    for layout in ("dcp", "safetensors"):
        overrides = {
            "checkpoint.format": layout, "checkpoint.export_lora_every": 2, "checkpoint.export_ema": True
        }
        Trainer(tiny_config(tmp_path / layout, max_steps=2, ema_decay=0.9, **overrides)).run()
        path = tmp_path / layout / "exports" / "lora-step-0000002.safetensors"
        with safe_open(str(path), framework="pt") as handle:
            exports[layout] = ({key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata())
    (dcp_tensors, dcp_metadata), (plain_tensors, plain_metadata) = exports["dcp"], exports["safetensors"]
    assert (tmp_path / "dcp" / "checkpoints" / "step-0000002" / "dcp").is_dir()
    assert dcp_tensors.keys() == plain_tensors.keys() and dcp_tensors
    assert all(torch.equal(dcp_tensors[key], plain_tensors[key]) for key in plain_tensors)
    for key in ("rank", "alpha", "targets", "ptss", "step", "ema"):
        assert dcp_metadata[key] == plain_metadata[key], key
    from pusa_fw.cli import main  # pusa-fw export-lora reads the DCP checkpoint too

    checkpoint = tmp_path / "dcp" / "checkpoints" / "step-0000002"
    assert main(["export-lora", str(checkpoint), "--out", str(tmp_path / "cli.safetensors"), "--ema"]) == 0
    with safe_open(str(tmp_path / "cli.safetensors"), framework="pt") as handle:
        assert all(torch.equal(handle.get_tensor(key), plain_tensors[key]) for key in plain_tensors)
