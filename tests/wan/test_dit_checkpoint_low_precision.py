"""Single-file DiT checkpoints as users have them: bf16, fp16, fp8_e4m3fn (plain or "scaled" with
``scale_weight``), with or without the ``model.diffusion_model.`` prefix; tiny files in each layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pusa_fw.errors import CheckpointError
from pusa_fw_wan import WanDiT
from pusa_fw_wan.dit.storage import LowPrecisionLinear, is_large_linear, quantize_fp8

PREFIXES = ("", "model.diffusion_model.")
LAYOUTS = ("bf16", "fp16", "fp8_e4m3fn", "fp8_e4m3fn_scaled")

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


def _module_of(key: str) -> str:
    return key.rpartition(".")[0]


def checkpoint_tensors(
    state: dict[str, torch.Tensor], layout: str, scale_shape: tuple[int, ...] = ()
) -> dict[str, torch.Tensor]:
    """The fixture's float32 state dict in one user layout (official key names, no prefix)."""
    if layout in ("bf16", "fp16"):
        dtype = torch.bfloat16 if layout == "bf16" else torch.float16
        return {name: tensor.to(dtype) for name, tensor in state.items()}
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        linear_weight = name.endswith(".weight") and is_large_linear(_module_of(name))
        if layout == "fp8_e4m3fn":  # plain cast of the block linears, the rest bf16
            tensors[name] = tensor.to(torch.float8_e4m3fn) if linear_weight else tensor.to(torch.bfloat16)
            continue
        # "scaled fp8": per-tensor scales, the text embedding quantised too, plus the extras such files carry
        if linear_weight or name == "text_embedding.0.weight":
            stored, scale = quantize_fp8(tensor, torch.float8_e4m3fn)
            tensors[name] = stored
            tensors[f"{_module_of(name)}.scale_weight"] = scale.reshape(scale_shape)
            tensors[f"{_module_of(name)}.scale_input"] = torch.ones(scale_shape)
        else:
            tensors[name] = tensor.to(torch.bfloat16)
    if layout == "fp8_e4m3fn_scaled":
        tensors["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return tensors


def write_layout(
    folder: Path, state: dict[str, torch.Tensor], layout: str, prefix: str, scale_shape: tuple[int, ...] = ()
) -> Path:
    tensors = checkpoint_tensors(state, layout, scale_shape)
    path = folder / f"wan_{layout}_{'prefixed' if prefix else 'bare'}.safetensors"
    save_file({prefix + name: tensor.contiguous() for name, tensor in tensors.items()}, str(path))
    return path


@pytest.fixture(scope="module")
def fixture_state(reference_dit) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in reference_dit.state_dict().items()}


@pytest.fixture(scope="module")
def inputs(wan_reference_dir: Path) -> dict[str, torch.Tensor]:
    case = load_file(str(wan_reference_dir / "dit" / "dit_vectorized_io.safetensors"))
    return {
        "latents": case["x"][None],
        "sigmas": case["frame_timesteps"][1:2] / 1000.0,
        "context": case["context"][None],
    }


def _velocity(model: WanDiT, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model.velocity(**inputs)


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_user_layouts_load_and_keep_fp8(
    layout, prefix, fixture_state, reference_dit, inputs, tmp_path: Path
) -> None:
    path = write_layout(tmp_path, fixture_state, layout, prefix)
    file = load_file(str(path))
    model = WanDiT.from_pretrained(path)
    layer = model.blocks[1].self_attn.v
    if layout.startswith("fp8"):  # fp8 stays fp8, bit for bit
        assert isinstance(layer, LowPrecisionLinear) and model.weights_dtype == torch.float8_e4m3fn
        stored = file[f"{prefix}blocks.1.self_attn.v.weight"]
        assert torch.equal(layer.weight.view(torch.uint8), stored.view(torch.uint8))
        if layout.endswith("scaled"):
            assert torch.equal(layer.scale_weight, file[f"{prefix}blocks.1.self_attn.v.scale_weight"])
    else:  # 16-bit files are computed in the asked dtype (float32 here), values exactly the file's
        assert type(layer) is torch.nn.Linear and layer.weight.dtype == torch.float32
        assert torch.equal(layer.weight, file[f"{prefix}blocks.1.self_attn.v.weight"].float())
    assert model.time_projection[1].weight.dtype == torch.float32
    # Stored fp8 computes exactly what the same file dequantised to float32 computes.
    upcast = WanDiT.from_pretrained(path, weights_dtype="float32")
    assert type(upcast.blocks[1].self_attn.v) is torch.nn.Linear
    assert torch.equal(_velocity(model, inputs), _velocity(upcast, inputs))
    reference = _velocity(reference_dit, inputs)
    error = float((_velocity(model, inputs) - reference).norm() / reference.norm())
    # measured: bf16 2.7e-3, fp16 3.3e-4, fp8_e4m3fn 9.6e-3, fp8_e4m3fn_scaled 9.3e-3
    bound = {"bf16": 8e-3, "fp16": 1e-3, "fp8_e4m3fn": 0.03, "fp8_e4m3fn_scaled": 0.03}[layout]
    assert error < bound, error


@pytest.mark.parametrize("scale_shape", [(), (1,)])
def test_scaled_fp8_to_other_storage(scale_shape, fixture_state, inputs, tmp_path: Path) -> None:
    path = write_layout(tmp_path, fixture_state, "fp8_e4m3fn_scaled", "model.diffusion_model.", scale_shape)
    exact = _velocity(WanDiT.from_pretrained(path, weights_dtype="float32"), inputs)
    as_bf16 = WanDiT.from_pretrained(path, weights_dtype="bfloat16")
    assert as_bf16.weights_dtype == torch.bfloat16
    assert as_bf16.blocks[0].ffn[2].scale_weight is None
    out = _velocity(as_bf16, inputs)
    assert float((out - exact).norm() / exact.norm()) < 2e-3
    as_e5m2 = WanDiT.from_pretrained(path, weights_dtype="float8_e5m2")
    assert as_e5m2.weights_dtype == torch.float8_e5m2
    assert float((_velocity(as_e5m2, inputs) - exact).norm() / exact.norm()) < 0.05


def test_bf16_file_stored_in_fp8_on_request(fixture_state, inputs, tmp_path: Path) -> None:
    path = write_layout(tmp_path, fixture_state, "bf16", "")
    model = WanDiT.from_pretrained(path, weights_dtype="float8_e4m3fn")
    assert model.weights_dtype == torch.float8_e4m3fn
    direct = WanDiT.from_pretrained(path).set_weights_dtype("float8_e4m3fn")
    assert torch.equal(_velocity(model, inputs), _velocity(direct, inputs))  # load-time quantisation = later


def test_sharded_scaled_fp8_with_scales_in_another_shard(fixture_state, inputs, tmp_path: Path) -> None:
    tensors = checkpoint_tensors(fixture_state, "fp8_e4m3fn_scaled")
    scales = {name: tensor for name, tensor in tensors.items() if "scale" in name}
    weights = {name: tensor for name, tensor in tensors.items() if name not in scales}
    shards = tmp_path / "sharded"
    shards.mkdir()
    save_file(weights, str(shards / "diffusion_pytorch_model-00001-of-00002.safetensors"))
    save_file(scales, str(shards / "diffusion_pytorch_model-00002-of-00002.safetensors"))
    weight_map = {name: "diffusion_pytorch_model-00001-of-00002.safetensors" for name in weights}
    weight_map.update({name: "diffusion_pytorch_model-00002-of-00002.safetensors" for name in scales})
    (shards / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"weight_map": weight_map})
    )
    single = write_layout(tmp_path, fixture_state, "fp8_e4m3fn_scaled", "")
    sharded = WanDiT.from_pretrained(shards)
    assert sharded.weights_dtype == torch.float8_e4m3fn
    assert torch.equal(_velocity(sharded, inputs), _velocity(WanDiT.from_pretrained(single), inputs))


def test_fp8_torch_file_loads_without_pickle(fixture_state, inputs, tmp_path: Path) -> None:
    tensors = checkpoint_tensors(fixture_state, "fp8_e4m3fn_scaled")
    torch.save(tensors, tmp_path / "wan_fp8.pt")
    model = WanDiT.from_pretrained(tmp_path / "wan_fp8.pt")
    assert model.weights_dtype == torch.float8_e4m3fn
    save_file(tensors, str(tmp_path / "wan_fp8.safetensors"))
    assert torch.equal(
        _velocity(model, inputs), _velocity(WanDiT.from_pretrained(tmp_path / "wan_fp8.safetensors"), inputs)
    )


def test_a_scale_without_its_weight_is_named(fixture_state, tmp_path: Path) -> None:
    tensors = checkpoint_tensors(fixture_state, "fp8_e4m3fn_scaled")
    tensors["blocks.0.self_attn.x.scale_weight"] = torch.tensor(1.0)
    save_file(tensors, str(tmp_path / "odd.safetensors"))
    with pytest.raises(CheckpointError, match=r"blocks\.0\.self_attn\.x\.scale_weight"):
        WanDiT.from_pretrained(tmp_path / "odd.safetensors")


def test_scratch_buffer_reads_equal_fresh_reads(fixture_state, tmp_path: Path) -> None:
    from pusa_fw_wan.weights.safetensors import iter_tensors

    path = write_layout(tmp_path, fixture_state, "fp8_e4m3fn_scaled", "")
    fresh = dict(iter_tensors(path))
    storages = set()
    for name, tensor in iter_tensors(path, reuse_buffer=True):
        storages.add(tensor.untyped_storage().data_ptr())
        bits, expected = tensor.reshape(-1).view(torch.uint8), fresh[name].reshape(-1).view(torch.uint8)
        assert tensor.dtype == fresh[name].dtype and torch.equal(bits, expected), name
    assert len(storages) < len(fresh) / 4  # one buffer, regrown only when a larger tensor comes


def test_a_bare_scaled_fp8_marker_beside_prefixed_keys(fixture_state, inputs, tmp_path: Path) -> None:
    tensors = checkpoint_tensors(fixture_state, "fp8_e4m3fn_scaled")
    marker = tensors.pop("scaled_fp8")
    prefixed = {f"model.diffusion_model.{name}": tensor for name, tensor in tensors.items()}
    save_file({**prefixed, "scaled_fp8": marker}, str(tmp_path / "mixed.safetensors"))
    save_file(tensors, str(tmp_path / "plain.safetensors"))
    mixed = WanDiT.from_pretrained(tmp_path / "mixed.safetensors")
    assert mixed.weights_dtype == torch.float8_e4m3fn
    assert torch.equal(
        _velocity(mixed, inputs), _velocity(WanDiT.from_pretrained(tmp_path / "plain.safetensors"), inputs)
    )
