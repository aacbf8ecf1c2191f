"""Training options: bf16 autocast with fp32 master weights, continuing from an existing LoRA file, the
validation hook, and config errors."""

from __future__ import annotations

import pytest
import torch

from pusa_fw.errors import InputError
from pusa_fw_wan.testing.train import tiny_config
from pusa_fw_train import Trainer
from pusa_fw_wan.train import export_lora

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bf16_autocast_trains_fp32_master_weights(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, precision="bf16", max_steps=4, **{"optimizer.lr": 2e-2}))
    seen = []
    result = trainer.run(progress=lambda record: seen.append(record["loss"]))
    assert result.step == 4 and all(torch.isfinite(torch.tensor(seen)))
    assert all(tensor.dtype == torch.float32 for tensor in trainer.tensors.values())
    assert any(
        float(t.detach().abs().max()) > 0 for n, t in trainer.tensors.items() if n.endswith("lora_B.weight")
    )


def test_continue_from_an_exported_lora_file(tmp_path):
    first = Trainer(tiny_config(tmp_path / "first", max_steps=2, **{"optimizer.lr": 5e-2}))
    first.run()
    exported = export_lora(tmp_path / "first", tmp_path / "first.safetensors")
    second = Trainer(tiny_config(tmp_path / "second", **{"lora.init_from": str(exported.path)}))
    for name, tensor in first.tensors.items():
        torch.testing.assert_close(
            second.tensors[name].detach(), tensor.detach(), rtol=1e-6, atol=1e-7, msg=name
        )
    with pytest.raises(Exception, match="rank 4, the run has lora.rank=8"):
        Trainer(tiny_config(tmp_path / "third", **{"lora.init_from": str(exported.path), "lora.rank": 8}))


def test_validation_hook_sees_every_validation(tmp_path):
    calls = []
    Trainer(tiny_config(tmp_path, max_steps=4, **{"validation.every": 2, "validation.num_samples": 1})).run(
        on_validation=lambda trainer, metrics: calls.append((trainer.step, sorted(metrics)))
    )
    assert [step for step, _ in calls] == [2, 4]
    assert "val/i2v" in calls[0][1] and "val/all" in calls[0][1]


def test_config_errors_are_one_line_and_name_the_field(tmp_path):
    with pytest.raises(InputError) as caught:
        tiny_config(tmp_path, **{"optimizer.lr": -1.0, "lora.rank": 0, "model.path": "x"})
    message = str(caught.value)
    assert "\n" not in message and "optimizer[lr]" in message and "lora[rank]" in message
    assert "exactly one of model.path" in message
    with pytest.raises(InputError, match="LoRA target 'nope' matches no Linear"):
        Trainer(tiny_config(tmp_path, **{"lora.targets": ["q", "nope"]}))
