"""A trained checkpoint goes through ``export-lora`` and the public loader to the trained model's output."""

from __future__ import annotations

import pytest
import torch

from pusa_fw_wan.dit.config import WanConfig
from pusa_fw_wan.dit.model import WanDiT
from pusa_fw_wan.lora import LoraSpec, apply_loras
from pusa_fw_wan.testing.tiny import randomise_parameters
from pusa_fw_wan.testing.train import tiny_config
from pusa_fw_train import Trainer
from pusa_fw_wan.train import export_lora

pytestmark = pytest.mark.usefixtures("one_thread")


def test_trained_lora_exports_and_loads_back_to_the_trained_output(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "run", max_steps=3, **{"optimizer.lr": 5e-2}))
    trainer.run()
    exported = export_lora(tmp_path / "run", tmp_path / "lora.safetensors")
    assert exported.step == 3 and exported.rank == 4 and exported.modules == 20
    architecture = trainer.config.model.architecture
    base = WanDiT(WanConfig(**architecture))
    randomise_parameters(base, torch.Generator().manual_seed(trainer.config.model.init_seed))
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, 3, 4, 4, generator=generator)
    sigmas = torch.rand(1, 3, generator=generator)
    context = torch.randn(1, 4, 16, generator=generator)
    with torch.no_grad():
        before = base(latents, sigmas, context)
        trained = trainer.model(latents, sigmas, context)
        apply_loras(base, [LoraSpec(exported.path, strength=1.0, name="trained")])
        loaded = base(latents, sigmas, context)
    assert (trained - before).abs().max() > 1e-3  # the LoRA changed the model
    torch.testing.assert_close(loaded, trained, rtol=1e-5, atol=1e-6)
