"""Every LoRA file format changes a tiny WanDiT exactly as `strength * scale * B @ A` (+ diffs) says.

Each test writes a LoRA file in one format, applies it, and compares the patched model's output with a
deep copy whose weights were changed by hand (scale = alpha / rank where the file has an alpha, else 1).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from pusa_fw.errors import CheckpointError
from pusa_fw_wan.dit.config import WanConfig
from pusa_fw_wan.dit.model import WanDiT
from pusa_fw_wan.lora.apply import LoraSpec, apply_loras, load_lora_state, remove_loras
from pusa_fw_wan.lora.names import diffusers_to_original, kohya_to_dotted

RANK = 3
TOLERANCE = 1e-5

# Independent, hand-written table (wan_reference.md §2.2) used to *write* diffusers-named files.
DIFFUSERS_NAME = {
    "blocks.0.self_attn.q": "blocks.0.attn1.to_q",
    "blocks.0.self_attn.o": "blocks.0.attn1.to_out.0",
    "blocks.1.cross_attn.k": "blocks.1.attn2.to_k",
    "blocks.1.ffn.0": "blocks.1.ffn.net.0.proj",
    "blocks.0.ffn.2": "blocks.0.ffn.net.2",
    "head.head": "proj_out",
    "time_projection.1": "condition_embedder.time_proj",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "patch_embedding": "patch_embedding",
}


def tiny_dit(seed: int = 0) -> WanDiT:
    torch.manual_seed(seed)
    config = WanConfig(dim=32, num_heads=2, num_layers=2, ffn_dim=64, text_dim=16, freq_dim=32, text_len=8)
    return WanDiT(config).eval()


def tiny_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 16, 2, 4, 4, generator=generator)
    sigmas = torch.tensor([[0.3, 0.9], [0.0, 0.5]])
    context = torch.randn(2, 5, 16, generator=generator)
    return latents, sigmas, context


def random_pair(module: nn.Module, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A [r, in(, k...)] and B [out, r(, 1...)] for a Linear or Conv3d."""
    if isinstance(module, nn.Conv3d):
        down = torch.randn(RANK, module.in_channels, *module.kernel_size, generator=generator) * 0.2
        up = torch.randn(module.out_channels, RANK, 1, 1, 1, generator=generator) * 0.2
    else:
        down = torch.randn(RANK, module.in_features, generator=generator) * 0.2
        up = torch.randn(module.out_features, RANK, generator=generator) * 0.2
    return down, up


def add_pair_by_hand(
    model: nn.Module, name: str, down: torch.Tensor, up: torch.Tensor, factor: float
) -> None:
    weight = model.get_submodule(name).weight
    delta = (up.reshape(up.shape[0], RANK) @ down.reshape(RANK, -1)).reshape(weight.shape)
    with torch.no_grad():
        weight += factor * delta


def output(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(*tiny_inputs())


def check_against(model: nn.Module, reference: nn.Module, base: torch.Tensor) -> float:
    patched = output(model)
    error = (patched - output(reference)).abs().max().item()
    assert (patched - base).abs().max().item() > 1e-3, "the LoRA did not change the output"
    assert error <= TOLERANCE
    return error


@pytest.mark.parametrize("style", ["pusa_default", "peft_plain", "comfy_A_B"])
def test_peft_style_names_scale_one_or_alpha(tmp_path, style):
    model, generator = tiny_dit(), torch.Generator().manual_seed(2)
    reference, base = copy.deepcopy(model), output(model)
    targets = ["blocks.0.self_attn.q", "blocks.1.cross_attn.v", "blocks.1.ffn.2"]
    tensors, strength, alpha = {}, 1.7, 6.0
    for name in targets:
        down, up = random_pair(model.get_submodule(name), generator)
        if style == "pusa_default":  # DiffSynth / Pusa V1: `.default.`, no alpha -> scale 1
            tensors[f"{name}.lora_A.default.weight"], tensors[f"{name}.lora_B.default.weight"] = down, up
            factor = strength
        elif style == "peft_plain":
            tensors[f"{name}.lora_A.weight"], tensors[f"{name}.lora_B.weight"] = down, up
            factor = strength
        else:  # ComfyUI naming with lora_A/lora_B and an alpha key -> scale alpha / rank
            prefix = f"model.diffusion_model.{name}"
            tensors[f"{prefix}.lora_A.weight"], tensors[f"{prefix}.lora_B.weight"] = down, up
            tensors[f"{prefix}.alpha"] = torch.tensor(alpha)
            factor = strength * alpha / RANK
        add_pair_by_hand(reference, name, down, up, factor)
    save_file(tensors, tmp_path / "lora.safetensors")
    report = apply_loras(model, [LoraSpec(tmp_path / "lora.safetensors", strength=strength)])
    assert report.loras[0].modules == tuple(sorted(targets))
    check_against(model, reference, base)


@pytest.mark.parametrize("prefix", ["", "transformer."], ids=["unprefixed", "diffusers-prefixed"])
def test_diffusers_names_metadata_alpha_bias_and_conv(tmp_path, prefix):
    """`lora_adapter_metadata` as older pusa-fw exports wrote it (`lora_alpha`) and as diffusers'
    `save_lora_weights` writes it (`transformer.lora_alpha`, next to another component's keys)."""
    model, generator = tiny_dit(), torch.Generator().manual_seed(3)
    reference, base = copy.deepcopy(model), output(model)
    tensors, strength, lora_alpha = {}, 0.8, 1.5
    for original, diffusers in DIFFUSERS_NAME.items():
        down, up = random_pair(model.get_submodule(original), generator)
        tensors[f"transformer.{diffusers}.lora_A.weight"] = down
        tensors[f"transformer.{diffusers}.lora_B.weight"] = up
        add_pair_by_hand(reference, original, down, up, strength * lora_alpha / RANK)
    bias = torch.randn(32, generator=generator)
    tensors["transformer.blocks.0.attn1.to_out.0.lora_B.bias"] = bias
    with torch.no_grad():
        reference.get_submodule("blocks.0.self_attn.o").bias += strength * lora_alpha / RANK * bias
    adapter = {f"{prefix}r": RANK, f"{prefix}lora_alpha": lora_alpha}
    if prefix:  # another component's config must not be read for the transformer
        adapter |= {"text_encoder.r": RANK, "text_encoder.lora_alpha": 7.0, "lora_alpha": 11.0}
    metadata = {"lora_adapter_metadata": json.dumps(adapter)}
    save_file(tensors, tmp_path / "diffusers.safetensors", metadata=metadata)
    report = apply_loras(model, [LoraSpec(tmp_path / "diffusers.safetensors", strength=strength)])
    assert report.loras[0].naming == "diffusers"
    assert report.loras[0].scales == (lora_alpha / RANK,)
    assert set(report.loras[0].modules) == set(DIFFUSERS_NAME)
    check_against(model, reference, base)


def test_comfy_down_up_alpha_diff_and_diff_b(tmp_path):
    model, generator = tiny_dit(), torch.Generator().manual_seed(4)
    reference, base = copy.deepcopy(model), output(model)
    tensors, strength, alphas = {}, 1.3, {"blocks.0.self_attn.k": 2.0, "blocks.1.ffn.0": 5.0}
    for name, alpha in alphas.items():
        down, up = random_pair(model.get_submodule(name), generator)
        tensors[f"diffusion_model.{name}.lora_down.weight"] = down
        tensors[f"diffusion_model.{name}.lora_up.weight"] = up
        tensors[f"diffusion_model.{name}.alpha"] = torch.tensor(alpha)
        add_pair_by_hand(reference, name, down, up, strength * alpha / RANK)
    diffs = {  # parameter -> (file key, delta)
        "head.head.bias": ("diffusion_model.head.head.diff_b", torch.randn(64, generator=generator) * 0.1),
        "head.head.weight": (
            "diffusion_model.head.head.diff",
            torch.randn(64, 32, generator=generator) * 0.1,
        ),
        "blocks.1.norm3.weight": (
            "diffusion_model.blocks.1.norm3.diff",
            torch.randn(32, generator=generator) * 0.1,
        ),
        "blocks.0.modulation": (
            "diffusion_model.blocks.0.modulation.diff",
            torch.randn(1, 6, 32, generator=generator) * 0.1,
        ),
        "blocks.0.self_attn.k.bias": (
            "diffusion_model.blocks.0.self_attn.k.diff_b",
            torch.randn(32, generator=generator) * 0.1,
        ),
    }
    parameters = dict(reference.named_parameters())
    for parameter, (key, delta) in diffs.items():
        tensors[key] = delta
        with torch.no_grad():
            parameters[parameter] += strength * delta
    save_file(tensors, tmp_path / "comfy.safetensors")
    report = apply_loras(model, [LoraSpec(tmp_path / "comfy.safetensors", strength=strength)])
    assert set(report.loras[0].diff_parameters) == set(diffs)
    check_against(model, reference, base)
    originals = {name: value.clone() for name, value in tiny_dit().state_dict().items()}
    remove_loras(model)
    assert all(torch.equal(value, originals[name]) for name, value in model.state_dict().items())


def test_kohya_names(tmp_path):
    model, generator = tiny_dit(), torch.Generator().manual_seed(5)
    reference, base = copy.deepcopy(model), output(model)
    flattened = {
        "blocks.0.cross_attn.o": "blocks_0_cross_attn_o",
        "blocks.1.ffn.0": "blocks_1_ffn_0",
        "time_embedding.2": "time_embedding_2",
    }
    tensors, strength, alpha = {}, 0.9, 1.0
    for name, flat in flattened.items():
        down, up = random_pair(model.get_submodule(name), generator)
        tensors[f"lora_unet_{flat}.lora_down.weight"] = down
        tensors[f"lora_unet_{flat}.lora_up.weight"] = up
        tensors[f"lora_unet_{flat}.alpha"] = torch.tensor(alpha)
        add_pair_by_hand(reference, name, down, up, strength * alpha / RANK)
    save_file(tensors, tmp_path / "kohya.safetensors")
    report = apply_loras(model, [LoraSpec(tmp_path / "kohya.safetensors", strength=strength)])
    assert set(report.loras[0].modules) == set(flattened)
    check_against(model, reference, base)


def test_pusa_v1_layout_pt_file_strength_1_4(tmp_path):
    """Rank r on self/cross q,k,v,o and ffn.0/2 of every block, `.default.` names, no alpha (= rank)."""
    model, generator = tiny_dit(), torch.Generator().manual_seed(6)
    reference, base = copy.deepcopy(model), output(model)
    targets = [
        f"blocks.{i}.{attn}.{p}" for i in range(2) for attn in ("self_attn", "cross_attn") for p in "qkvo"
    ]
    targets += [f"blocks.{i}.ffn.{j}" for i in range(2) for j in (0, 2)]
    tensors = {}
    for name in targets:
        down, up = random_pair(model.get_submodule(name), generator)
        tensors[f"{name}.lora_A.default.weight"], tensors[f"{name}.lora_B.default.weight"] = down, up
        add_pair_by_hand(reference, name, down, up, 1.4)
    torch.save(tensors, tmp_path / "pusa_v1.pt")
    report = apply_loras(model, [LoraSpec(tmp_path / "pusa_v1.pt", strength=1.4)])
    lora = report.loras[0]
    assert (lora.name, len(lora.modules), lora.ranks, lora.scales) == ("pusa_v1", 20, (RANK,), (1.0,))
    check_against(model, reference, base)


def test_foreign_keys_are_listed_and_model_left_untouched(tmp_path):
    model, generator = tiny_dit(), torch.Generator().manual_seed(7)
    down, up = random_pair(model.get_submodule("blocks.0.self_attn.q"), generator)
    tensors = {
        "diffusion_model.blocks.0.self_attn.q.lora_down.weight": down,
        "diffusion_model.blocks.0.self_attn.q.lora_up.weight": up,
        "diffusion_model.blocks.0.cross_attn.k_img.lora_down.weight": down.clone(),  # i2v-only module
        "diffusion_model.blocks.0.cross_attn.k_img.lora_up.weight": up.clone(),
        "text_encoder.encoder.block.0.weird": torch.zeros(2),  # not a LoRA key at all
    }
    save_file(tensors, tmp_path / "foreign.safetensors")
    before = output(model)
    with pytest.raises(CheckpointError) as error:
        apply_loras(model, [LoraSpec(tmp_path / "foreign.safetensors")])
    for key in (
        "cross_attn.k_img.lora_down.weight",
        "cross_attn.k_img.lora_up.weight",
        "text_encoder.encoder.block.0.weird",
    ):
        assert key in str(error.value)
    assert "self_attn.q.lora_down" not in str(error.value)
    assert not hasattr(model, "peft_config") and torch.equal(output(model), before)
    report = apply_loras(model, [LoraSpec(tmp_path / "foreign.safetensors")], strict=False)
    assert len(report.loras[0].unmatched_keys) == 3 and report.loras[0].modules == ("blocks.0.self_attn.q",)


def test_shape_mismatch_and_broken_files_are_clear_errors(tmp_path):
    model = tiny_dit()
    save_file(
        {
            "blocks.0.ffn.0.lora_A.weight": torch.zeros(RANK, 48),
            "blocks.0.ffn.0.lora_B.weight": torch.zeros(64, RANK),
        },
        tmp_path / "big.safetensors",
    )
    with pytest.raises(CheckpointError, match=r"blocks\.0\.ffn\.0.*\[3, 32\].*\[3, 48\]"):
        apply_loras(model, [LoraSpec(tmp_path / "big.safetensors")])
    save_file({"blocks.0.ffn.0.lora_A.weight": torch.zeros(RANK, 32)}, tmp_path / "half.safetensors")
    with pytest.raises(CheckpointError, match="one half"):
        load_lora_state(tmp_path / "half.safetensors")
    torch.save({"state": {"nested": torch.zeros(1)}}, tmp_path / "nested.pt")
    with pytest.raises(CheckpointError, match="not tensors"):
        load_lora_state(tmp_path / "nested.pt")
    torch.save(nn.Linear(2, 2), tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_lora_state(tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_lora_state(tmp_path / "missing.safetensors")
    save_file(
        {
            "blocks.0.ffn.0.lora_A.weight": torch.zeros(RANK, 32),
            "blocks.0.ffn.0.lora_B.weight": torch.zeros(64, RANK),
        },
        tmp_path / "list_metadata.safetensors",
        metadata={"lora_adapter_metadata": "[4, 8]"},
    )
    with pytest.raises(CheckpointError, match="lora_adapter_metadata.*JSON list, not an object"):
        load_lora_state(tmp_path / "list_metadata.safetensors")
    save_file({"completely.unrelated.weight": torch.zeros(2)}, tmp_path / "unrelated.safetensors")
    with pytest.raises(CheckpointError, match="matches no module.*completely.unrelated.weight"):
        apply_loras(model, [LoraSpec(tmp_path / "unrelated.safetensors")], strict=False)


def test_name_rules_avoid_substring_pitfalls():
    assert diffusers_to_original("blocks.4.attn2.to_k") == "blocks.4.cross_attn.k"
    assert diffusers_to_original("blocks.4.attn2.add_k_proj") == "blocks.4.cross_attn.k_img"
    assert diffusers_to_original("blocks.4.norm2") == "blocks.4.norm3"
    assert diffusers_to_original("scale_shift_table") == "head.modulation"
    assert diffusers_to_original("blocks.4.scale_shift_table") == "blocks.4.modulation"
    assert diffusers_to_original("blocks.4.attn1.add_k_proj") is None
    assert kohya_to_dotted("blocks_12_cross_attn_k_img") == "blocks.12.cross_attn.k_img"
    assert kohya_to_dotted("blocks_12_attn1_to_out_0") == "blocks.12.attn1.to_out.0"
    assert kohya_to_dotted("blocks_12_mystery") is None


def test_pusa_fw_training_adapter_scales_by_its_metadata_alpha(tmp_path):
    """A trained checkpoint's adapter.safetensors (format pusa-fw-lora) applies with scale alpha / rank."""
    model, generator = tiny_dit(), torch.Generator().manual_seed(4)
    reference, base = copy.deepcopy(model), output(model)
    tensors, alpha = {}, 6.0
    for name in ("blocks.0.self_attn.k", "blocks.1.ffn.0"):
        down, up = random_pair(model.get_submodule(name), generator)
        tensors[f"{name}.lora_A.weight"], tensors[f"{name}.lora_B.weight"] = down, up
        add_pair_by_hand(reference, name, down, up, alpha / RANK)
    metadata = {"format": "pusa-fw-lora", "rank": str(RANK), "alpha": str(alpha), "targets": '["k", "ffn.0"]'}
    save_file(tensors, tmp_path / "adapter.safetensors", metadata=metadata)
    apply_loras(model, [LoraSpec(tmp_path / "adapter.safetensors")])
    check_against(model, reference, base)
    save_file(tensors, tmp_path / "bad.safetensors", metadata={**metadata, "alpha": "six"})
    with pytest.raises(CheckpointError, match="alpha 'six' is not a number"):
        load_lora_state(tmp_path / "bad.safetensors")
