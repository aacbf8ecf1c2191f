"""The 4-step LoRAs in their released key layouts load whole and stack with the Pusa LoRA.

Two layouts, written here at test time for a tiny WanDiT (the key names are the released ones, the
tensors tiny and random):

- LightX2V's Wan2.1 step/CFG-distill LoRA (``Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank64``, and
  the files of LightX2V's ``lora_extractor``): ``diffusion_model.``-prefixed original names, an SVD pair
  ``lora_down.weight`` / ``lora_up.weight`` (no alpha: scale 1) for the large Linears, and every other
  parameter as a full delta: ``.diff`` (``head.head``, ``patch_embedding``, the norms), ``.diff_b``
  (every bias) and ``.diff_m`` (``blocks.N.modulation``, ``head.modulation``).
- Wan2.2-Lightning (``Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1.1``, which Pusa's scripts merge into
  Wan2.1): ``diffusion_model.blocks.N.<linear>.lora_down.weight`` / ``lora_up.weight`` and ``.alpha``.

Each is merged alone and together with a Pusa V1 LoRA (PEFT names ``blocks.N.<linear>.lora_A.default.weight``,
strength 1.4); the merged weights must equal base + every delta, computed here by hand.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from pusa_fw.errors import CheckpointError
from pusa_fw_wan.dit.config import WanConfig
from pusa_fw_wan.dit.model import WanDiT
from pusa_fw_wan.lora.apply import LoraSpec, apply_loras, load_lora_state

LIGHTX2V_RANK = 4
LIGHTNING_RANK = 4
LIGHTNING_ALPHA = 8.0  # scale alpha / rank = 2, so a reader that ignores .alpha is caught
PUSA_RANK = 3
PUSA_STRENGTH = 1.4
PREFIX = "diffusion_model."
BLOCK_LINEARS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
                 "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2")
TOP_PAIRS = ("text_embedding.0", "text_embedding.2", "time_embedding.0", "time_embedding.2", "time_projection.1")
"""Top-level Linears that LightX2V's extractor stores as pairs (over 1M parameters at 14B); head.head is a diff."""


def tiny_dit() -> WanDiT:
    torch.manual_seed(0)
    config = WanConfig(dim=32, num_heads=2, num_layers=2, ffn_dim=64, text_dim=16, freq_dim=32, text_len=8)
    return WanDiT(config).eval()


def _block_linears(model: nn.Module) -> list[str]:
    return [f"blocks.{index}.{name}" for index in range(len(model.blocks)) for name in BLOCK_LINEARS]


def _pair(layer: nn.Linear, rank: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    down = torch.randn(rank, layer.in_features, generator=generator) * 0.2
    up = torch.randn(layer.out_features, rank, generator=generator) * 0.2
    return down, up


def write_lightx2v(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """A LightX2V Wan2.1 distill LoRA for `model`; returns parameter name -> its full delta (scale 1)."""
    generator = torch.Generator().manual_seed(11)
    tensors, deltas = {}, {}
    paired = set(_block_linears(model)) | set(TOP_PAIRS)
    for name, parameter in model.named_parameters():
        owner, _, attribute = name.rpartition(".")
        if attribute == "weight" and owner in paired:
            down, up = _pair(model.get_submodule(owner), LIGHTX2V_RANK, generator)
            tensors[f"{PREFIX}{owner}.lora_down.weight"] = down
            tensors[f"{PREFIX}{owner}.lora_up.weight"] = up
            deltas[name] = up @ down
            continue
        delta = torch.randn(parameter.shape, generator=generator) * 0.05
        suffix = {"weight": "diff", "bias": "diff_b", "modulation": "diff_m"}[attribute]
        tensors[f"{PREFIX}{owner}.{suffix}"] = delta
        deltas[name] = delta
    save_file(tensors, str(path))
    return deltas


def write_lightning(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """A Wan2.2-Lightning LoRA (pairs with .alpha) for `model`; returns parameter name -> its full delta."""
    generator = torch.Generator().manual_seed(12)
    tensors, deltas = {}, {}
    for module in _block_linears(model):
        down, up = _pair(model.get_submodule(module), LIGHTNING_RANK, generator)
        tensors[f"{PREFIX}{module}.alpha"] = torch.tensor(LIGHTNING_ALPHA)
        tensors[f"{PREFIX}{module}.lora_down.weight"] = down
        tensors[f"{PREFIX}{module}.lora_up.weight"] = up
        deltas[f"{module}.weight"] = (LIGHTNING_ALPHA / LIGHTNING_RANK) * (up @ down)
    save_file(tensors, str(path))
    return deltas


def write_pusa(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """A Pusa V1 LoRA (PEFT names with .default, no alpha); returns parameter name -> delta at strength 1."""
    generator = torch.Generator().manual_seed(13)
    tensors, deltas = {}, {}
    for module in _block_linears(model):
        down, up = _pair(model.get_submodule(module), PUSA_RANK, generator)
        tensors[f"{module}.lora_A.default.weight"] = down
        tensors[f"{module}.lora_B.default.weight"] = up
        deltas[f"{module}.weight"] = up @ down
    torch.save(tensors, str(path))
    return deltas


def merged_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters by their plain names (peft's ``base_layer`` folded away, LoRA tensors left out)."""
    return {name.replace(".base_layer", ""): parameter.detach()
            for name, parameter in model.named_parameters() if "lora_" not in name}


def expected_parameters(model: nn.Module, *weighted: tuple[dict[str, torch.Tensor], float]) -> dict[str, torch.Tensor]:
    expected = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    for deltas, strength in weighted:
        for name, delta in deltas.items():
            expected[name] += strength * delta
    return expected


def assert_parameters_equal(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, tuple[Path, dict[str, torch.Tensor]]]:
    model = tiny_dit()
    made = {}
    for name, writer, file in (("lightx2v", write_lightx2v, "Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank64"
                                ".safetensors"),
                               ("lightning", write_lightning, "low_noise_model.safetensors"),
                               ("pusa", write_pusa, "pusa_v1.pt")):
        path = tmp_path / file
        made[name] = (path, writer(model, path))
    return made


def test_lightx2v_layout_reads_every_key(files) -> None:
    path, deltas = files["lightx2v"]
    state = load_lora_state(path)
    assert state.foreign_keys == [] and state.naming == "original"
    assert {f"{module}.modulation" for module in ("blocks.0", "blocks.1", "head")} <= set(state.modules)
    keys = sorted(key for entry in state.modules.values() for key in entry.keys)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        assert keys == sorted(handle.keys()), "every key of the file is read into some entry"


@pytest.mark.parametrize("name", ["lightx2v", "lightning"])
def test_four_step_lora_covers_every_target(files, name: str) -> None:
    path, deltas = files[name]
    model = tiny_dit()
    expected = expected_parameters(model, (deltas, 1.0))
    report = apply_loras(model, [LoraSpec(path)], merge=True)
    (applied,) = report.loras
    assert applied.unmatched_keys == ()
    touched = {f"{module}.weight" for module in applied.modules} | set(applied.diff_parameters)
    assert touched == set(deltas), "a target of the file was dropped (or a parameter patched twice)"
    assert applied.scales == ((LIGHTNING_ALPHA / LIGHTNING_RANK,) if name == "lightning" else (1.0,))
    assert_parameters_equal(merged_parameters(model), expected)


@pytest.mark.parametrize("name", ["lightx2v", "lightning"])
def test_stacks_with_the_pusa_lora(files, name: str) -> None:
    path, deltas = files[name]
    pusa_path, pusa_deltas = files["pusa"]
    model = tiny_dit()
    expected = expected_parameters(model, (deltas, 1.0), (pusa_deltas, PUSA_STRENGTH))
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for parameter_name, parameter in reference.named_parameters():
            parameter.copy_(expected[parameter_name])
    report = apply_loras(model, [LoraSpec(path, name="distill"), LoraSpec(pusa_path, PUSA_STRENGTH, name="pusa")],
                         merge=True)
    assert report.merged and all(lora.unmatched_keys == () for lora in report.loras)
    assert_parameters_equal(merged_parameters(model), expected)
    generator = torch.Generator().manual_seed(1)
    inputs = (torch.randn(1, 16, 2, 4, 4, generator=generator), torch.tensor([[0.9375, 0.625]]),
              torch.randn(1, 5, 16, generator=generator))
    with torch.no_grad():
        torch.testing.assert_close(model(*inputs), reference(*inputs), rtol=1e-4, atol=1e-5)


def test_diff_m_of_a_missing_block_is_not_applied(tmp_path: Path) -> None:
    model = tiny_dit()
    path = tmp_path / "wider.safetensors"
    save_file({f"{PREFIX}blocks.0.diff_m": torch.zeros(1, 6, 32),
               f"{PREFIX}blocks.5.diff_m": torch.zeros(1, 6, 32)}, str(path))
    report = apply_loras(model, [LoraSpec(path)], strict=False)
    assert report.loras[0].diff_parameters == ("blocks.0.modulation",)


def test_diff_m_of_a_missing_block_is_listed_as_unmatched(tmp_path: Path) -> None:
    path = tmp_path / "wider.safetensors"
    save_file({f"{PREFIX}blocks.0.diff_m": torch.zeros(1, 6, 32),
               f"{PREFIX}blocks.5.diff_m": torch.zeros(1, 6, 32)}, str(path))
    report = apply_loras(tiny_dit(), [LoraSpec(path)], strict=False)
    assert report.loras[0].unmatched_keys == (f"{PREFIX}blocks.5.diff_m",)
    with pytest.raises(CheckpointError, match="blocks.5.diff_m"):
        apply_loras(tiny_dit(), [LoraSpec(path)])
