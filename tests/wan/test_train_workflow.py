"""The user's whole path on a tiny Wan: ``prepare`` a captioned folder, train a LoRA on the cache,
``export-lora`` the run, and load the file onto the base model: it reproduces the trained model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pusa_fw.cli import main as cli_main
from pusa_fw.io.image import save_image
from pusa_fw.io.video import write_video
from pusa_fw_wan.dit.model import WanDiT
from pusa_fw_wan.lora import LoraSpec, apply_loras
from pusa_fw_train import Trainer
from pusa_fw_wan.train.cache import LatentCache
from pusa_fw_train.config import validate_train_config
from pusa_fw_wan.train.export import base_model_hash, export_lora

pytestmark = pytest.mark.usefixtures("one_thread")


def test_prepare_train_export_and_load(tmp_path: Path, tiny) -> None:
    data = tmp_path / "data"
    data.mkdir()
    frames = (np.arange(9 * 32 * 32 * 3) % 253).astype(np.uint8).reshape(9, 32, 32, 3)
    write_video(data / "clip.mp4", frames, fps=16)
    save_image(data / "still.png", torch.linspace(-1, 1, 3 * 32 * 32).reshape(3, 32, 32))
    (data / "metadata.csv").write_text("file_name,text\nclip.mp4,a red fish swims\nstill.png,a small house\n")
    cache = tmp_path / "cache"
    prepare = ["prepare", str(data), "--out", str(cache), "--model", str(tiny.root), "--height", "32"]
    assert cli_main([*prepare, "--width", "32", "--num-frames", "5", "--device", "cpu"]) == 0

    run = tmp_path / "run"
    config = validate_train_config(
        {
            "output_dir": str(run),
            "max_steps": 3,
            "seed": 0,
            "mode": "lora",
            "model": {"path": str(tiny.root)},
            "lora": {"rank": 4, "alpha": 4.0},
            "data": {"source": str(cache), "batch_size": 1},
            "optimizer": {"lr": 5e-2},
            "logging": {"tensorboard": False, "every": 1},
            "precision": "fp32",  # the export is compared with an fp32 base at 1e-5: no bf16 base or autocast
        }
    )
    trainer = Trainer(config)
    trainer.run()

    exported = export_lora(run, tmp_path / "lora.safetensors")
    assert (
        exported.step == 3
        and exported.rank == 4
        and exported.metadata["base_model_hash"] == base_model_hash(tiny.root)
    )
    dit_weights = (tiny.root / "diffusion_pytorch_model.safetensors").read_bytes()  # the DiT only, not VAE/T5
    assert exported.metadata["base_model_hash"] == "sha256:" + hashlib.sha256(dit_weights).hexdigest()
    assert json.loads(exported.metadata["config"])["data"]["source"] == str(cache)
    sample = LatentCache(cache).load(0)  # the first cached clip: 5 frames -> 2 latent frames at 32x32
    latents, context = sample.latents[None], sample.context[None]
    sigmas = torch.tensor([[0.7, 0.3]])
    base = WanDiT.from_pretrained(tiny.root).eval()
    with torch.no_grad():
        before = base(latents, sigmas, context)
        trained = trainer.model(latents, sigmas, context)
        apply_loras(base, [LoraSpec(exported.path, name="trained")])
        loaded = base(latents, sigmas, context)
    assert (trained - before).abs().max() > 1e-3
    torch.testing.assert_close(loaded, trained, rtol=1e-5, atol=1e-5)
