"""Low-precision storage of the large linears: error bounds per dtype, fp8 quantisation, dtypes kept."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file

from pusa_fw.errors import InputError
from pusa_fw_wan import WanDiT
from pusa_fw_wan.dit.storage import (
    LowPrecisionLinear,
    dequantize,
    large_linear_names,
    quantize_fp8,
    storage_bytes,
)
from pusa_fw_wan.testing.storage_error import measure_storage_error

# Measured on the fixture DiT (dim 256, 2 layers), velocity of all three per-frame rows of
# dit_vectorized_io (torch 2.13 CPU): see README "Weights dtype". The bounds leave ~2-3x headroom.
# weights_dtype: (velocity max-abs, velocity relative, worst layer relative)
BOUNDS = {
    "float32": (0.0, 0.0, 0.0),
    "float16": (1e-3, 2e-4, 5e-4),
    "bfloat16": (1e-2, 2e-3, 4e-3),
    "float8_e4m3fn": (0.12, 0.025, 0.05),
    "float8_e5m2": (0.25, 0.05, 0.1),
}

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


@pytest.fixture(scope="module")
def vectorized_case(wan_reference_dir: Path) -> dict[str, torch.Tensor]:
    case = load_file(str(wan_reference_dir / "dit" / "dit_vectorized_io.safetensors"))
    return {
        "latents": case["x"][None].expand(3, -1, -1, -1, -1).contiguous(),
        "sigmas": case["frame_timesteps"] / 1000.0,
        "context": case["context"][None].expand(3, -1, -1).contiguous(),
    }


@pytest.mark.parametrize("weights_dtype", list(BOUNDS))
def test_storage_error_against_float32_is_bounded(reference_dit, vectorized_case, weights_dtype) -> None:
    error = measure_storage_error(reference_dit, weights_dtype, **vectorized_case)
    max_abs, relative, layer_relative = BOUNDS[weights_dtype]
    assert error.velocity_max_abs <= max_abs, error
    assert error.velocity_relative <= relative, error
    assert error.layer_relative <= layer_relative, error
    if weights_dtype != "float32":
        assert error.velocity_max_abs > 0, "a lossy storage that changes nothing was not applied"


def test_storage_error_orders_by_precision(reference_dit, vectorized_case) -> None:
    errors = {
        name: measure_storage_error(reference_dit, name, **vectorized_case).velocity_relative
        for name in ("float16", "bfloat16", "float8_e4m3fn", "float8_e5m2")
    }
    assert errors["float16"] < errors["bfloat16"] < errors["float8_e4m3fn"] < errors["float8_e5m2"], errors


def test_fp8_storage_keeps_one_byte_per_weight_and_fp32_elsewhere(reference_dit) -> None:
    import copy

    model = copy.deepcopy(reference_dit).set_weights_dtype("float8_e4m3fn")
    names = large_linear_names(model)
    assert len(names) == 10 * model.config.num_layers  # q, k, v, o twice + two FFN layers
    for name in names:
        layer = model.get_submodule(name)
        assert isinstance(layer, LowPrecisionLinear)
        assert layer.weight.dtype == torch.float8_e4m3fn and not layer.weight.requires_grad
        assert layer.scale_weight is not None and layer.scale_weight.dtype == torch.float32
        assert layer.bias.dtype == torch.float32
    for name, parameter in model.named_parameters():
        if not any(name == f"{path}.weight" for path in names):
            assert parameter.dtype == torch.float32, name
    linear_elements = sum(model.get_submodule(name).weight.numel() for name in names)
    saved = storage_bytes(reference_dit) - storage_bytes(model)
    assert saved == 3 * linear_elements - 4 * len(names)  # 4 -> 1 byte per weight, plus one fp32 scale each
    assert model.weights_dtype == torch.float8_e4m3fn


def test_storage_round_trips_through_float32(reference_dit) -> None:
    import copy

    model = copy.deepcopy(reference_dit).set_weights_dtype("bfloat16")
    back = model.set_weights_dtype("float32")
    layer = back.get_submodule("blocks.0.ffn.0")
    assert type(layer) is torch.nn.Linear and layer.weight.dtype == torch.float32
    original = reference_dit.get_submodule("blocks.0.ffn.0").weight
    assert torch.equal(layer.weight, original.to(torch.bfloat16).float())


def test_compute_dtype_changes_but_storage_stays(reference_dit, vectorized_case) -> None:
    import copy

    model = copy.deepcopy(reference_dit).set_weights_dtype("float8_e4m3fn")
    stored = model.blocks[1].cross_attn.k.weight.clone()
    model.set_compute_dtype(torch.bfloat16)
    layer = model.blocks[1].cross_attn.k
    assert layer.compute_dtype == torch.bfloat16 and layer.bias.dtype == torch.bfloat16
    assert torch.equal(layer.weight.view(torch.uint8), stored.view(torch.uint8))
    assert model.time_projection[1].weight.dtype == torch.float32
    with torch.no_grad():
        out = model.velocity(**vectorized_case)
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())


def test_unknown_weights_dtype_names_the_choices(reference_dit) -> None:
    with pytest.raises(InputError, match="float8_e4m3fn"):
        reference_dit.set_weights_dtype("int4")


@given(
    st.lists(st.floats(-1e4, 1e4, allow_nan=False, width=32), min_size=1, max_size=64),
    st.sampled_from([torch.float8_e4m3fn, torch.float8_e5m2]),
)
def test_quantize_fp8_error_is_within_the_format_rounding(values, dtype) -> None:
    weight = torch.tensor(values, dtype=torch.float32).reshape(1, -1)
    stored, scale = quantize_fp8(weight, dtype)
    restored = dequantize(stored, scale, torch.float32)
    mantissa_bits = 3 if dtype == torch.float8_e4m3fn else 2
    smallest_step = torch.finfo(dtype).smallest_normal * 2.0**-mantissa_bits
    bound = weight.abs() * 2.0 ** -(mantissa_bits + 1) + scale * smallest_step / 2 + 1e-6 * weight.abs()
    assert bool(((restored - weight).abs() <= bound * (1 + 1e-5)).all())
    amax = weight.abs().max()
    if amax > torch.finfo(dtype).max * torch.finfo(torch.float32).tiny:  # largest weight -> largest fp8
        assert float(stored.float().abs().max()) == torch.finfo(dtype).max


def test_loaded_fp8_model_state_dict_round_trips(reference_dit, tmp_path: Path) -> None:
    import copy

    from safetensors.torch import save_file

    model = copy.deepcopy(reference_dit).set_weights_dtype("float8_e4m3fn")
    state = model.state_dict()
    assert "blocks.0.self_attn.q.scale_weight" in state
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, str(tmp_path / "m.safetensors"))
    loaded = WanDiT.from_pretrained(tmp_path / "m.safetensors")
    assert loaded.weights_dtype == torch.float8_e4m3fn
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(
            tensor.view(torch.uint8) if tensor.dtype.itemsize == 1 else tensor,
            state[name].view(torch.uint8) if tensor.dtype.itemsize == 1 else state[name],
        ), name


@pytest.mark.parametrize("weights_dtype", ["bfloat16", "float8_e4m3fn"])
def test_backward_through_a_frozen_stored_base_keeps_only_the_stored_weights(
    reference_dit, vectorized_case, weights_dtype
) -> None:
    import copy

    stored = copy.deepcopy(reference_dit).set_weights_dtype(weights_dtype)
    plain = copy.deepcopy(stored).set_weights_dtype("float32")  # the same values, dequantised, plain Linear
    for model in (stored, plain):
        model.train().requires_grad_(False)
        model.blocks[1].self_attn.q.bias.requires_grad_(True)
    saved: list[torch.Tensor] = []

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor)
        return tensor

    latents = vectorized_case["latents"][:1].clone().requires_grad_(True)
    inputs = {"sigmas": vectorized_case["sigmas"][:1], "context": vectorized_case["context"][:1]}
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        out = stored.velocity(latents, **inputs)
    out.square().mean().backward()
    dense = {tuple(stored.get_submodule(name).weight.shape) for name in large_linear_names(stored)}
    kept_dense = [t for t in saved if t.dtype == torch.float32 and tuple(t.shape) in dense]
    assert not kept_dense, [tuple(t.shape) for t in kept_dense]  # no dequantised weight copies
    reference_latents = latents.detach().clone().requires_grad_(True)
    plain.velocity(reference_latents, **inputs).square().mean().backward()
    assert torch.allclose(latents.grad, reference_latents.grad, rtol=1e-4, atol=1e-7)
    assert torch.allclose(
        stored.blocks[1].self_attn.q.bias.grad, plain.blocks[1].self_attn.q.bias.grad, rtol=1e-4, atol=1e-7
    )
