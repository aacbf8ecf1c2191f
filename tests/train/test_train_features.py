"""Features users of musubi-tuner and diffusion-pipe expect: save on SIGTERM, a LoRA export every N steps."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from pusa_fw.errors import InputError
from pusa_fw_train import Trainer
from pusa_fw_wan.testing.train import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sigterm_saves_after_the_current_step_and_the_run_resumes_bit_exact(tmp_path):
    Trainer(tiny_config(tmp_path / "straight", max_steps=5)).run()
    trainer = Trainer(tiny_config(tmp_path / "killed", max_steps=5))
    previous = signal.getsignal(signal.SIGTERM)

    def terminate_at_step_2(record):
        if record["step"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    result = trainer.run(progress=terminate_at_step_2)
    assert signal.getsignal(signal.SIGTERM) is previous, "the previous SIGTERM handler is back"
    assert result.step == 2 and result.checkpoint is not None and result.checkpoint.name == "step-0000002"
    Trainer.resume(tmp_path / "killed").run()
    straight = load_file(str(tmp_path / "straight" / "checkpoints" / "step-0000005" / "adapter.safetensors"))
    resumed = load_file(str(tmp_path / "killed" / "checkpoints" / "step-0000005" / "adapter.safetensors"))
    assert all(torch.equal(resumed[name], tensor) for name, tensor in straight.items())


def test_a_lora_is_exported_every_n_steps_in_the_adapters_layout(tmp_path):
    config = tiny_config(tmp_path / "run", max_steps=4, ema_decay=0.9,
                         **{"checkpoint.export_lora_every": 2, "checkpoint.export_ema": True})
    Trainer(config).run()
    exports = sorted((tmp_path / "run" / "exports").iterdir())
    assert [path.name for path in exports] == ["lora-step-0000002.safetensors", "lora-step-0000004.safetensors"]
    with safe_open(str(exports[-1]), framework="pt") as handle:
        keys, metadata = list(handle.keys()), handle.metadata()
    assert keys and all(key.startswith("diffusion_model.") for key in keys)
    assert metadata["step"] == "4" and metadata["ema"] == "true"


def test_exports_of_a_full_fine_tune_are_refused_in_one_line(tmp_path):
    with pytest.raises(InputError, match="export_lora_every") as caught:
        tiny_config(tmp_path, mode="full", **{"checkpoint.export_lora_every": 2})
    assert "\n" not in str(caught.value)
