"""Checkpoints and exact resume: N steps straight equal N/2, stop, resume to N, bit for bit (CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from pusa_fw.errors import CheckpointError, InputError
from pusa_fw_wan.testing.train import tiny_config
from pusa_fw_train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

# Every stateful feature at once: accumulation, EMA, held frames, logit-normal mixture, cosine warmup,
# BSMNTW weights, validation in the middle, an epoch boundary (4 training samples, global batch 2).
RICH = {
    "max_steps": 6,
    "optimizer.grad_accumulation": 2,
    "ema_decay": 0.9,
    "loss.frame_weighting": "bsmntw",
    "ptss": {"p_async": 0.5, "marginal": "logit_normal", "uniform_fraction": 0.2, "held_probability": 0.5},
    "validation.every": 2,
    "validation.num_samples": 1,
    "checkpoint.every": 2,
    "checkpoint.keep_last": 2,
}


def _files(directory):
    return {
        name: load_file(str(directory / name))
        for name in ("adapter.safetensors", "ema.safetensors", "optimizer.safetensors")
    }


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_stop_and_resume_ends_bit_identical(tmp_path, mode):
    straight = Trainer(tiny_config(tmp_path / "straight", mode=mode, **RICH)).run()
    assert straight.step == 6
    Trainer(tiny_config(tmp_path / "paused", mode=mode, **RICH)).run(stop_at=3)
    resumed = Trainer.resume(tmp_path / "paused").run()
    assert resumed.step == 6
    kind = "adapter" if mode == "lora" else "model"
    for name in (f"{kind}.safetensors", "ema.safetensors", "optimizer.safetensors", "rng.safetensors"):
        expected = load_file(str(straight.checkpoint / name))
        got = load_file(str(resumed.checkpoint / name))
        assert expected.keys() == got.keys()
        for key, tensor in expected.items():
            assert torch.equal(tensor, got[key]), f"{name}:{key} differs after resume"
    assert json.loads((resumed.checkpoint / "optimizer.json").read_text()) == json.loads(
        (straight.checkpoint / "optimizer.json").read_text()
    )
    state = json.loads((resumed.checkpoint / "trainer_state.json").read_text())
    assert state == json.loads((straight.checkpoint / "trainer_state.json").read_text())
    assert state["epoch"] >= 1  # the run crossed an epoch boundary

    # The logs agree too (the resumed run appended the steps after 3).
    def losses(run):
        return {
            r["step"]: r["loss"]
            for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())
            if "loss" in r
        }

    assert losses(tmp_path / "paused") == losses(tmp_path / "straight")


def test_checkpoint_contract_pointer_and_pruning(tmp_path):
    result = Trainer(tiny_config(tmp_path, **RICH)).run()
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step-0000004", "step-0000006"]
    assert (checkpoints / "latest").read_text().strip() == "step-0000006" == result.checkpoint.name
    with safe_open(str(result.checkpoint / "adapter.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
        keys = set(handle.keys())
    assert (
        metadata["format"] == "pusa-fw-lora" and metadata["rank"] == "4" and float(metadata["alpha"]) == 8.0
    )
    targets = json.loads(metadata["targets"])
    assert "blocks.0.self_attn.q" in targets and keys == {
        f"{t}.lora_{h}.weight" for t in targets for h in "AB"
    }
    tensors = load_file(str(result.checkpoint / "adapter.safetensors"))
    assert tensors["blocks.0.self_attn.q.lora_A.weight"].shape == (4, 32)
    assert tensors["blocks.0.self_attn.q.lora_B.weight"].shape == (32, 4)
    assert all(t.dtype == torch.float32 for t in tensors.values())
    saved = json.loads((result.checkpoint / "config.json").read_text())
    assert saved == json.loads((tmp_path / "config.json").read_text()) and saved["max_steps"] == 6
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert all({"lr", "grad_norm", "step_time_s", "tokens_per_s"} <= r.keys() for r in train)
    assert any(k.startswith("sigma_") for k in train[0])
    validation = [r for r in records if "val/all" in r]
    assert [r["step"] for r in validation] == [2, 4, 6]
    assert {"val/t2v", "val/i2v", "val/start-end", "val/extension"} <= validation[0].keys()


def test_resume_refuses_a_different_config_and_a_half_written_checkpoint(tmp_path):
    config = tiny_config(tmp_path, **{"checkpoint.every": 1})
    Trainer(config).run(stop_at=2)
    changed = tiny_config(tmp_path, **{"checkpoint.every": 1, "optimizer.lr": 1e-3, "ptss.p_async": 0.2})
    with pytest.raises(CheckpointError) as caught:
        Trainer.resume(tmp_path, changed)
    message = str(caught.value)
    assert "\n" not in message and "optimizer.lr: run has 0.005, given 0.001" in message
    assert "ptss.p_async: run has 1.0, given 0.2" in message
    # max_steps may change (extending a run).
    assert Trainer.resume(tmp_path, tiny_config(tmp_path, max_steps=8, **{"checkpoint.every": 1})).step == 2
    (tmp_path / "checkpoints" / "step-0000002" / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        Trainer.resume(tmp_path / "checkpoints" / "step-0000002")
    with pytest.raises(InputError, match="already holds a run"):
        Trainer(config)
