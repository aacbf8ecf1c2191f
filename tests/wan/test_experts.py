"""Wan2.2 A14B two-expert backbone: the step's max sigma picks the expert, per the boundary."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import save_file

from pusa_fw.errors import InputError
from pusa_fw_wan.dit.config import WanConfig
from pusa_fw_wan.dit.model import WanDiT
from pusa_fw_wan.dit.experts import WanExpertsBackbone
from pusa_fw_wan.lora.apply import LoraSpec

CONFIG = WanConfig(dim=32, num_heads=2, num_layers=2, ffn_dim=64, text_dim=16, freq_dim=32, text_len=8)
BELOW_BOUNDARY = torch.nextafter(torch.tensor(0.875), torch.tensor(0.0)).item()  # largest fp32 < 0.875


def tiny_dit(seed: int) -> WanDiT:
    torch.manual_seed(seed)
    return WanDiT(CONFIG).eval()


def inputs(batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return torch.randn(batch, 16, 2, 4, 4, generator=generator), torch.randn(
        batch, 5, 16, generator=generator
    )


@pytest.fixture(scope="module")
def experts() -> tuple[WanDiT, WanDiT, WanExpertsBackbone]:
    high, low = tiny_dit(0), tiny_dit(1)
    return high, low, WanExpertsBackbone(high_noise=high, low_noise=low, boundary=0.875)


@pytest.mark.parametrize(
    ("frame_sigmas", "expected"),
    [
        ([0.875, 0.875], "high"),  # exactly at the boundary: high-noise expert (Wan: t >= boundary * 1000)
        ([BELOW_BOUNDARY, BELOW_BOUNDARY], "low"),
        ([0.0, 0.9], "high"),  # a clean conditioning frame does not lower the step's level
        ([0.5, 0.874], "low"),
        ([1.0, 0.2], "high"),
    ],
)
def test_expert_is_picked_by_max_sigma(experts, frame_sigmas, expected):
    high, low, backbone = experts
    latents, context = inputs()
    sigmas = torch.tensor([frame_sigmas])
    with torch.no_grad():
        result = backbone.velocity(latents, sigmas, context)
        outputs = {
            "high": high.velocity(latents, sigmas, context),
            "low": low.velocity(latents, sigmas, context),
        }
    other = "low" if expected == "high" else "high"
    assert torch.equal(result, outputs[expected])
    assert (result - outputs[other]).abs().max().item() > 1e-2
    assert backbone.uses_high_noise(sigmas).tolist() == [expected == "high"]


def test_mixed_batch_is_split_and_reassembled(experts):
    high, low, backbone = experts
    latents, context = inputs(batch=3)
    sigmas = torch.tensor([[0.95, 0.95], [0.3, 0.0], [0.0, 0.875]])
    with torch.no_grad():
        result = backbone(latents, sigmas, context)
        for row, expert in enumerate((high, low, high)):
            alone = expert.velocity(latents[row : row + 1], sigmas[row : row + 1], context[row : row + 1])
            assert (result[row : row + 1] - alone).abs().max().item() <= 1e-6
    with pytest.raises(InputError, match="both sides of the expert boundary"):
        backbone.velocity(latents, sigmas, None)


def test_boundary_is_configurable_and_validated(experts):
    high, low, _ = experts
    i2v = WanExpertsBackbone(high_noise=high, low_noise=low, boundary=0.9)
    assert i2v.uses_high_noise(torch.tensor([[0.875, 0.875], [0.9, 0.1]])).tolist() == [False, True]
    with pytest.raises(InputError, match="boundary=875"):
        WanExpertsBackbone(high_noise=high, low_noise=low, boundary=875)
    with pytest.raises(InputError, match="same object"):
        WanExpertsBackbone(high_noise=high, low_noise=high)
    with pytest.raises(TypeError):
        WanExpertsBackbone(high, low)  # roles are keyword-only, never positional order


def _save_official(model: WanDiT, folder) -> None:
    folder.mkdir()
    fields = (
        "dim",
        "eps",
        "ffn_dim",
        "freq_dim",
        "in_dim",
        "model_type",
        "num_heads",
        "num_layers",
        "out_dim",
        "text_dim",
        "text_len",
    )
    config = {"_class_name": "WanModel", **{field: getattr(CONFIG, field) for field in fields}}
    (folder / "config.json").write_text(json.dumps(config))
    save_file(
        {name: value.contiguous() for name, value in model.state_dict().items()},
        folder / "diffusion_pytorch_model.safetensors",
    )


def _write_lora(path, model: WanDiT, seed: int) -> WanDiT:
    """A Pusa-style LoRA on blocks.0.self_attn.q; returns the model patched by hand with strength 1.4."""
    generator = torch.Generator().manual_seed(seed)
    down, up = torch.randn(2, 32, generator=generator) * 0.3, torch.randn(32, 2, generator=generator) * 0.3
    save_file(
        {
            "blocks.0.self_attn.q.lora_A.default.weight": down,
            "blocks.0.self_attn.q.lora_B.default.weight": up,
        },
        path,
    )
    reference = copy.deepcopy(model)
    with torch.no_grad():
        reference.blocks[0].self_attn.q.weight += 1.4 * up @ down
    return reference


def test_from_pretrained_gives_each_expert_its_own_checkpoint_and_lora(tmp_path):
    high, low = tiny_dit(0), tiny_dit(1)
    _save_official(high, tmp_path / "high_noise_model")
    _save_official(low, tmp_path / "low_noise_model")
    high_reference = _write_lora(tmp_path / "high_noise_pusa.safetensors", high, 5)
    low_reference = _write_lora(tmp_path / "low_noise_pusa.safetensors", low, 6)
    backbone = WanExpertsBackbone.from_pretrained(
        tmp_path / "high_noise_model",
        tmp_path / "low_noise_model",
        high_loras=[LoraSpec(tmp_path / "high_noise_pusa.safetensors", strength=1.4)],
        low_loras=[LoraSpec(tmp_path / "low_noise_pusa.safetensors", strength=1.4)],
    )
    assert backbone.lora_reports["high_noise"].loras[0].name == "high_noise_pusa"
    assert backbone.lora_reports["low_noise"].loras[0].name == "low_noise_pusa"
    latents, context = inputs()
    with torch.no_grad():
        for level, reference in ((0.9, high_reference), (0.5, low_reference)):
            sigmas = torch.full((1, 2), level)
            error = (
                (backbone(latents, sigmas, context) - reference.velocity(latents, sigmas, context))
                .abs()
                .max()
                .item()
            )
            assert error <= 1e-5
    with pytest.raises(InputError, match="own checkpoint"):
        WanExpertsBackbone.from_pretrained(tmp_path / "high_noise_model", tmp_path / "high_noise_model")


def test_from_pretrained_stores_both_experts_in_the_asked_weights_dtype(tmp_path):
    high, low = tiny_dit(0), tiny_dit(1)
    _save_official(high, tmp_path / "high_noise_model")
    _save_official(low, tmp_path / "low_noise_model")
    _write_lora(tmp_path / "high_noise_pusa.safetensors", high, 5)
    backbone = WanExpertsBackbone.from_pretrained(
        tmp_path / "high_noise_model", tmp_path / "low_noise_model", weights_dtype="float8_e4m3fn",
        high_loras=[LoraSpec(tmp_path / "high_noise_pusa.safetensors", strength=1.4)], merge_loras=True,
    )
    assert backbone.high_noise.weights_dtype == backbone.low_noise.weights_dtype == torch.float8_e4m3fn
    stored = copy.deepcopy(low).set_weights_dtype("float8_e4m3fn")
    latents, context = inputs()
    sigmas = torch.full((1, 2), 0.5)  # the low-noise expert
    with torch.no_grad():
        assert torch.equal(backbone(latents, sigmas, context), stored.velocity(latents, sigmas, context))
