"""LoRA on a low-precision (fp8 / bf16) base: merged per layer into the dequantised weight, or unmerged."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pusa_fw.errors import InputError
from pusa_fw_wan.dit.storage import LowPrecisionLinear
from pusa_fw_wan.lora.apply import LoraSpec, apply_loras, merge_loras, remove_loras, unmerge_loras
from pusa_fw_wan.testing.storage_error import compare_lora_on_low_precision, write_random_lora

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


@pytest.fixture(scope="module")
def inputs(wan_reference_dir: Path) -> dict[str, torch.Tensor]:
    case = load_file(str(wan_reference_dir / "dit" / "dit_vectorized_io.safetensors"))
    return {
        "latents": case["x"][None].expand(3, -1, -1, -1, -1).contiguous(),
        "sigmas": case["frame_timesteps"] / 1000.0,
        "context": case["context"][None].expand(3, -1, -1).contiguous(),
    }


@pytest.fixture(scope="module")
def lora_file(reference_dit, tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_random_lora(str(tmp_path_factory.mktemp("lora") / "pusa_like.safetensors"), reference_dit)


@pytest.mark.parametrize("weights_dtype", ["bfloat16", "float8_e4m3fn", "float8_e5m2"])
def test_merged_per_layer_equals_unmerged_and_tracks_the_fp32_merge(
    reference_dit, lora_file, inputs, weights_dtype
) -> None:
    # Measured (README "Weights dtype"): e4m3fn base + LoRA at 1.4 is 1.09e-2 from the fp32 merge, both ways;
    # merging into the stored weights (re-quantising W + dW) is 1.37e-2.
    result = compare_lora_on_low_precision(reference_dit, lora_file, 1.4, weights_dtype, **inputs)
    assert result.lora_effect_relative > 0.1  # the LoRA matters
    assert result.merged_vs_unmerged_max_abs < 1e-4
    assert abs(result.merged_per_layer_relative - result.unmerged_relative) < 1e-5
    bound = {"bfloat16": 2e-3, "float8_e4m3fn": 0.03, "float8_e5m2": 0.06}[weights_dtype]
    assert result.merged_per_layer_relative < bound
    assert result.merged_per_layer_relative < result.requantized_relative


def test_merge_never_touches_the_stored_fp8_bits(reference_dit, lora_file, inputs) -> None:
    model = copy.deepcopy(reference_dit).set_weights_dtype("float8_e4m3fn")
    stored = {
        name: tensor.view(torch.uint8).clone()
        for name, tensor in model.state_dict().items()
        if tensor.dtype == torch.float8_e4m3fn
    }
    with torch.no_grad():
        plain = model.velocity(**inputs)
    report = apply_loras(model, [LoraSpec(lora_file, strength=1.4)], merge=True)
    assert report.merged
    layer = model.blocks[0].ffn[0]
    base = layer.get_base_layer()
    assert isinstance(base, LowPrecisionLinear) and len(base.merged_deltas) == 1
    assert layer.lora_A["pusa_like"].weight.dtype == torch.float32  # adapters in the compute dtype
    with torch.no_grad():
        merged = model.velocity(**inputs)
        unmerge_loras(model)
        assert not base.merged_deltas
        unmerged = model.velocity(**inputs)
        merge_loras(model)
        again = model.velocity(**inputs)
    assert torch.equal(merged, again)
    assert torch.allclose(merged, unmerged, atol=1e-4)
    remove_loras(model)
    assert isinstance(model.blocks[0].ffn[0], LowPrecisionLinear)
    for name, bits in stored.items():
        assert torch.equal(model.state_dict()[name].view(torch.uint8), bits), name
    with torch.no_grad():
        assert torch.equal(model.velocity(**inputs), plain)


def test_full_weight_diff_on_fp8_is_refused(reference_dit, tmp_path: Path) -> None:
    model = copy.deepcopy(reference_dit).set_weights_dtype("float8_e4m3fn")
    path = tmp_path / "diff.safetensors"
    save_file({"diffusion_model.blocks.0.ffn.0.diff": torch.zeros(512, 256)}, str(path))
    with pytest.raises(InputError, match="--weights-dtype bfloat16"):
        apply_loras(model, [LoraSpec(path)])


def test_weights_dtype_cannot_change_under_a_lora(reference_dit, lora_file) -> None:
    model = copy.deepcopy(reference_dit)
    apply_loras(model, [LoraSpec(lora_file)])
    with pytest.raises(InputError, match="before applying LoRAs"):
        model.set_weights_dtype("float8_e4m3fn")
