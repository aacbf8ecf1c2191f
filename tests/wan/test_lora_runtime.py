"""Runtime LoRA behaviour on a tiny WanDiT: several LoRAs, strength changes, merge / unmerge / remove."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from pusa_fw.errors import InputError
from pusa_fw_wan.dit.config import WanConfig
from pusa_fw_wan.dit.model import WanDiT
from pusa_fw_wan.lora.apply import (
    LoraSpec,
    apply_loras,
    lora_strengths,
    merge_loras,
    remove_loras,
    set_lora_strength,
    unmerge_loras,
)

RANK = 4


def tiny_dit(seed: int = 0) -> WanDiT:
    torch.manual_seed(seed)
    config = WanConfig(dim=32, num_heads=2, num_layers=2, ffn_dim=64, text_dim=16, freq_dim=32, text_len=8)
    return WanDiT(config).eval()


def output(model: nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 16, 2, 4, 4, generator=generator)
    context = torch.randn(1, 5, 16, generator=generator)
    with torch.no_grad():
        return model(latents, torch.tensor([[0.2, 0.7]]), context)


def write_lora(
    path: Path, model: nn.Module, targets: list[str], seed: int, alpha: float | None
) -> dict[str, torch.Tensor]:
    """A ComfyUI-style file (with alpha) or a Pusa-style one (without); returns module -> scale * B @ A."""
    generator = torch.Generator().manual_seed(seed)
    tensors, deltas = {}, {}
    for name in targets:
        linear = model.get_submodule(name)
        down = torch.randn(RANK, linear.in_features, generator=generator) * 0.2
        up = torch.randn(linear.out_features, RANK, generator=generator) * 0.2
        if alpha is None:
            tensors[f"{name}.lora_A.default.weight"], tensors[f"{name}.lora_B.default.weight"] = down, up
        else:
            tensors[f"diffusion_model.{name}.lora_down.weight"] = down
            tensors[f"diffusion_model.{name}.lora_up.weight"] = up
            tensors[f"diffusion_model.{name}.alpha"] = torch.tensor(alpha)
        deltas[name] = up @ down * (1.0 if alpha is None else alpha / RANK)
    if alpha is not None:
        tensors["diffusion_model.head.head.diff_b"] = torch.randn(64, generator=generator) * 0.1
        deltas["head.head.bias"] = tensors["diffusion_model.head.head.diff_b"]
    save_file(tensors, path)
    return deltas


def patched_by_hand(base: nn.Module, *weighted: tuple[float, dict[str, torch.Tensor]]) -> nn.Module:
    reference = copy.deepcopy(base)
    parameters = dict(reference.named_parameters())
    with torch.no_grad():
        for strength, deltas in weighted:
            for name, delta in deltas.items():
                target = parameters[name] if name in parameters else reference.get_submodule(name).weight
                target += strength * delta
    return reference


@pytest.fixture
def two_loras(tmp_path):
    model = tiny_dit()
    pusa = write_lora(
        tmp_path / "pusa.pt.safetensors",
        model,
        ["blocks.0.self_attn.q", "blocks.1.ffn.0", "blocks.0.cross_attn.v"],
        10,
        None,
    )
    distill = write_lora(
        tmp_path / "distill.safetensors", model, ["blocks.0.self_attn.q", "blocks.1.self_attn.k"], 11, 2.0
    )
    return model, copy.deepcopy(model), tmp_path, pusa, distill


def max_error(model: nn.Module, reference: nn.Module) -> float:
    return (output(model) - output(reference)).abs().max().item()


def test_two_loras_with_their_own_strengths(two_loras):
    model, base, folder, pusa, distill = two_loras
    report = apply_loras(
        model,
        [
            LoraSpec(folder / "pusa.pt.safetensors", 1.4, name="pusa"),
            LoraSpec(folder / "distill.safetensors", 0.6, name="distill"),
        ],
    )
    assert [lora.name for lora in report.loras] == ["pusa", "distill"] and lora_strengths(model) == {
        "pusa": 1.4,
        "distill": 0.6,
    }
    assert max_error(model, patched_by_hand(base, (1.4, pusa), (0.6, distill))) <= 1e-5
    assert max_error(model, patched_by_hand(base, (1.4, pusa))) > 1e-3  # the second LoRA is active too


def test_strength_changes_replace_never_stack(two_loras):
    model, base, folder, pusa, distill = two_loras
    apply_loras(
        model,
        [
            LoraSpec(folder / "pusa.pt.safetensors", 1.0, name="pusa"),
            LoraSpec(folder / "distill.safetensors", 1.0, name="distill"),
        ],
    )
    for strength in (2.0, 3.0, 0.5):
        set_lora_strength(model, "distill", strength)
    assert max_error(model, patched_by_hand(base, (1.0, pusa), (0.5, distill))) <= 1e-5
    merge_loras(model)
    for strength in (4.0, -1.0, 0.25):
        set_lora_strength(model, "pusa", strength)
    assert max_error(model, patched_by_hand(base, (0.25, pusa), (0.5, distill))) <= 1e-5
    with pytest.raises(InputError, match="no LoRA named 'nope'"):
        set_lora_strength(model, "nope", 1.0)
    with pytest.raises(InputError, match="finite"):
        set_lora_strength(model, "pusa", float("nan"))


def test_merge_unmerge_restores_weights_and_remove_restores_the_model(two_loras):
    model, base, folder, pusa, distill = two_loras
    original = {name: value.clone() for name, value in base.state_dict().items()}
    apply_loras(
        model, [LoraSpec(folder / "pusa.pt.safetensors", 1.4), LoraSpec(folder / "distill.safetensors", 0.7)]
    )
    runtime = output(model)
    merge_loras(model)
    merged_weight = model.get_submodule("blocks.0.self_attn.q").get_base_layer().weight.detach().clone()
    expected = (
        original["blocks.0.self_attn.q.weight"]
        + 1.4 * pusa["blocks.0.self_attn.q"]
        + 0.7 * distill["blocks.0.self_attn.q"]
    )
    assert (merged_weight - expected).abs().max().item() <= 1e-6
    assert (output(model) - runtime).abs().max().item() <= 1e-5
    unmerge_loras(model)
    for name, value in model.state_dict().items():
        plain = name.replace(".base_layer", "")
        if plain in original and plain != "head.head.bias":  # head.head.bias carries the diff_b
            assert (value - original[plain]).abs().max().item() <= 1e-6, name
    assert (output(model) - runtime).abs().max().item() <= 1e-5
    merge_loras(model)
    remove_loras(model)
    state = model.state_dict()
    assert list(state) == list(original) and not hasattr(model, "peft_config")
    assert all((state[name] - value).abs().max().item() <= 1e-6 for name, value in original.items())
    assert torch.equal(state["head.head.bias"], original["head.head.bias"])  # diffs are undone exactly


def test_remove_one_of_two_and_apply_merged(two_loras):
    model, base, folder, pusa, _distill = two_loras
    report = apply_loras(
        model,
        [
            LoraSpec(folder / "pusa.pt.safetensors", 1.2, name="pusa"),
            LoraSpec(folder / "distill.safetensors", 0.8, name="distill"),
        ],
        merge=True,
    )
    assert report.merged
    remove_loras(model, ["distill"])
    assert list(lora_strengths(model)) == ["pusa"]
    assert max_error(model, patched_by_hand(base, (1.2, pusa))) <= 1e-5
    assert isinstance(model.get_submodule("blocks.1.self_attn.k"), nn.Linear)  # unwrapped: no adapter left
    with pytest.raises(InputError, match="already applied"):
        apply_loras(model, [LoraSpec(folder / "pusa.pt.safetensors", name="pusa")])
    with pytest.raises(InputError, match="name"):
        LoraSpec(folder / "pusa.pt.safetensors", name="has.dot")
