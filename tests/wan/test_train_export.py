"""`pusa-fw export-lora`: a peft-trained LoRA, saved in the checkpoint contract, exported and loaded back.

The LoRA'd model is built here with peft's `inject_adapter_in_model` (the trainer's own tool), its B
matrices made non-zero so the LoRA changes the output; the exported file, applied with the public loader
to a fresh copy of the base model, must reproduce the LoRA'd output, and strength 0 the base exactly.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pusa_fw.cli import main as cli_main
from pusa_fw.errors import CheckpointError
from pusa_fw_wan.dit.config import WanConfig
from pusa_fw_wan.dit.model import WanDiT
from pusa_fw_wan.lora import LoraSpec, apply_loras, set_lora_strength
from pusa_fw_wan.testing.tiny import randomise_parameters
from pusa_fw_wan.train.export import base_model_hash, export_lora

TARGETS = ["q", "k", "v", "o", "ffn.0", "ffn.2"]
RANK, ALPHA, STEP = 4, 8.0, 12
CONFIG = WanConfig(dim=32, num_heads=2, num_layers=2, ffn_dim=64, freq_dim=32, text_dim=32)


def fresh_base(seed: int = 0) -> WanDiT:
    return randomise_parameters(WanDiT(CONFIG), torch.Generator().manual_seed(seed)).eval()


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    latents = torch.randn(1, 16, 3, 4, 4, generator=generator)
    sigmas = torch.tensor([[0.9, 0.5, 0.2]])
    context = torch.randn(1, 5, 32, generator=generator)
    return latents, sigmas, context


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A peft-LoRA'd tiny DiT, its output, the base output, and a run directory in the checkpoint contract."""
    from peft import LoraConfig, inject_adapter_in_model

    model = fresh_base()
    with torch.no_grad():
        base_output = model(*inputs())
    model = inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS), model)
    generator = torch.Generator().manual_seed(3)
    adapter, ema = {}, {}
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
            if "lora_" in name:
                key = name.replace(".default", "")
                adapter[key] = parameter.detach().clone().float()
                ema[key] = 0.5 * adapter[key]
        lora_output = model(*inputs())
    run = tmp_path_factory.mktemp("run")
    checkpoint = run / "checkpoints" / f"step-{STEP:07d}"
    checkpoint.mkdir(parents=True)
    metadata = {
        "format": "pusa-fw-lora",
        "rank": str(RANK),
        "alpha": str(ALPHA),
        "targets": json.dumps(TARGETS),
    }
    save_file(adapter, str(checkpoint / "adapter.safetensors"), metadata=metadata)
    save_file(ema, str(checkpoint / "ema.safetensors"), metadata=metadata)
    base_file = run / "base.safetensors"
    save_file(fresh_base().state_dict(), str(base_file))
    config = {
        "model": {"path": str(base_file)},
        "lora": {"rank": RANK, "alpha": ALPHA},
        "ptss": {"p_async": 0.7, "shift": 5.0},
        "steps": STEP,
    }
    for folder in (run, checkpoint):
        (folder / "config.json").write_text(json.dumps(config))
    (run / "checkpoints" / "latest").write_text(f"step-{STEP:07d}\n")
    return {
        "run": run,
        "checkpoint": checkpoint,
        "base_file": base_file,
        "lora": lora_output,
        "base": base_output,
        "adapter": adapter,
    }


def loaded_output(path: Path, strength: float = 1.0) -> tuple[torch.Tensor, WanDiT]:
    model = fresh_base()
    apply_loras(model, [LoraSpec(path, strength=strength, name="exported")])
    with torch.no_grad():
        return model(*inputs()), model


@pytest.mark.parametrize("layout", ["comfyui", "diffusers"])
def test_export_round_trip_reproduces_the_trained_model(trained: dict, tmp_path: Path, layout: str) -> None:
    assert (trained["lora"] - trained["base"]).abs().max() > 1e-2  # the LoRA really changes the output
    out = export_lora(trained["run"], tmp_path / "lora.safetensors", layout=layout)
    assert out.modules == 2 * 10 and out.rank == RANK and out.alpha == ALPHA and out.step == STEP
    assert out.metadata["base_model_hash"] == base_model_hash(trained["base_file"])  # the config's model.path
    output, model = loaded_output(out.path)
    torch.testing.assert_close(output, trained["lora"], rtol=1e-5, atol=1e-5)
    set_lora_strength(model, "exported", 0.0)
    with torch.no_grad():
        assert torch.equal(model(*inputs()), trained["base"])


def test_comfyui_keys_alphas_and_metadata(trained: dict, tmp_path: Path) -> None:
    base = tmp_path / "base.safetensors"
    save_file({"w": torch.ones(2)}, str(base))
    out = export_lora(trained["checkpoint"], tmp_path / "lora.safetensors", strength=1.4, base_model=base)
    with safe_open(str(out.path), framework="pt") as handle:
        keys, metadata = set(handle.keys()), handle.metadata()
        alpha = handle.get_tensor("diffusion_model.blocks.1.ffn.2.alpha")
    expected = {f"diffusion_model.{key}" for key in trained["adapter"]}
    expected |= {f"diffusion_model.{key.rsplit('.lora_', 1)[0]}.alpha" for key in trained["adapter"]}
    assert keys == expected
    assert alpha.shape == () and float(alpha) == ALPHA
    assert (metadata["rank"], float(metadata["alpha"]), json.loads(metadata["targets"])) == (
        "4",
        ALPHA,
        TARGETS,
    )
    assert json.loads(metadata["ptss"]) == {"p_async": 0.7, "shift": 5.0}
    assert metadata["step"] == str(STEP) and float(metadata["recommended_strength"]) == 1.4
    assert json.loads(metadata["config"])["steps"] == STEP
    assert metadata["base_model_hash"] == "sha256:" + hashlib.sha256(base.read_bytes()).hexdigest()


def test_ema_export_uses_the_ema_weights(trained: dict, tmp_path: Path) -> None:
    out = export_lora(trained["run"], tmp_path / "ema.safetensors", ema=True)
    with safe_open(str(out.path), framework="pt") as handle:
        tensor = handle.get_tensor("diffusion_model.blocks.0.self_attn.q.lora_B.weight")
    assert torch.equal(tensor, 0.5 * trained["adapter"]["blocks.0.self_attn.q.lora_B.weight"])
    assert out.metadata["ema"] == "true"


def test_cli_exports_and_rejects_bad_sources(
    trained: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "cli.safetensors"
    assert cli_main(["export-lora", str(trained["run"]), "--out", str(out), "--layout", "diffusers"]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out
    assert cli_main(["export-lora", str(tmp_path), "--out", str(tmp_path / "x.safetensors")]) == 2
    error = capsys.readouterr().err.strip()
    assert "neither a checkpoint" in error and len(error.splitlines()) == 1
    with pytest.raises(CheckpointError, match="no EMA"):
        broken = tmp_path / "no_ema"
        broken.mkdir()
        (broken / "adapter.safetensors").write_bytes(
            (trained["checkpoint"] / "adapter.safetensors").read_bytes()
        )
        export_lora(broken, tmp_path / "y.safetensors", ema=True)
