"""Checkpoint loading: layouts, prefixes, dtype policy and the errors for keys that do not fit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pusa_fw.errors import CheckpointError
from pusa_fw_wan import WanConfig, WanDiT
from pusa_fw_wan.weights.safetensors import iter_tensors, read_header, write_streaming


@pytest.fixture(scope="module")
def reference_state(wan_reference_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(wan_reference_dir / "dit" / "single" / "diffusion_pytorch_model.safetensors")


def _assert_state_equal(model: WanDiT, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert sorted(state) == sorted(expected)
    for name, tensor in expected.items():
        assert torch.equal(state[name], tensor), name


def test_state_dict_keys_equal_the_official_keys(reference_state) -> None:
    config = WanConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2, text_dim=64)
    model = WanDiT(config)
    assert sorted(model.state_dict()) == sorted(reference_state)
    assert {name: tuple(t.shape) for name, t in model.state_dict().items()} == {
        name: tuple(t.shape) for name, t in reference_state.items()
    }
    assert not list(model.buffers())  # the RoPE table is computed, never stored


@pytest.mark.parametrize("layout", ["single", "sharded"])
def test_official_layouts_load_bit_exactly(dit_layout_dirs: dict, reference_state, layout: str) -> None:
    model = WanDiT.from_pretrained(dit_layout_dirs[layout])
    _assert_state_equal(model, reference_state)
    assert not model.training


@pytest.mark.parametrize("prefix", ["model.diffusion_model.", "diffusion_model."])
def test_prefixed_single_files_load(tmp_path: Path, reference_state, prefix: str) -> None:
    file = tmp_path / "wan_dit_comfy.safetensors"
    save_file({prefix + name: tensor for name, tensor in reference_state.items()}, str(file))
    model = WanDiT.from_pretrained(file)  # no config.json: the architecture comes from the shapes
    assert model.config == WanConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2, text_dim=64)
    _assert_state_equal(model, reference_state)


def test_torch_state_dict_file_loads_weights_only(tmp_path: Path, reference_state) -> None:
    file = tmp_path / "dit.pth"
    torch.save(dict(reference_state), file)
    _assert_state_equal(WanDiT.from_pretrained(file), reference_state)


def test_missing_and_unexpected_keys_are_listed(
    tmp_path: Path, wan_reference_dir: Path, reference_state
) -> None:
    broken = dict(reference_state)
    del broken["blocks.1.ffn.2.weight"]
    del broken["head.modulation"]
    broken["blocks.0.self_attn.extra_gate"] = torch.zeros(3)
    directory = tmp_path / "broken"
    directory.mkdir()
    shutil.copy(wan_reference_dir / "dit" / "single" / "config.json", directory / "config.json")
    save_file(broken, str(directory / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointError) as caught:
        WanDiT.from_pretrained(directory)
    message = str(caught.value)
    assert (
        "missing keys (2)" in message and "blocks.1.ffn.2.weight" in message and "head.modulation" in message
    )
    assert "unexpected keys (1)" in message and "blocks.0.self_attn.extra_gate" in message


def test_shape_mismatch_against_config_is_reported(
    tmp_path: Path, wan_reference_dir: Path, reference_state
) -> None:
    directory = tmp_path / "mismatch"
    directory.mkdir()
    config = json.loads((wan_reference_dir / "dit" / "single" / "config.json").read_text())
    config["ffn_dim"] = 1024
    (directory / "config.json").write_text(json.dumps(config))
    save_file(reference_state, str(directory / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointError, match=r"shape mismatches \(6\).*blocks\.0\.ffn\.0\.bias"):
        WanDiT.from_pretrained(directory)


def test_image_conditioned_checkpoint_is_refused_with_a_hint(tmp_path: Path, reference_state) -> None:
    extra = dict(reference_state)
    extra["blocks.0.cross_attn.k_img.weight"] = torch.zeros(256, 256)
    file = tmp_path / "i2v.safetensors"
    save_file(extra, str(file))
    with pytest.raises(CheckpointError, match="i2v"):
        WanDiT.from_pretrained(file)


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        WanDiT.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no Wan DiT weights"):
        WanDiT.from_pretrained(tmp_path)


def test_bfloat16_keeps_precision_critical_parameters_in_float32(wan_reference_dir: Path) -> None:
    model = WanDiT.from_pretrained(wan_reference_dir / "dit" / "single", dtype=torch.bfloat16)
    dtypes = {name: parameter.dtype for name, parameter in model.named_parameters()}
    assert dtypes["blocks.0.self_attn.q.weight"] == torch.bfloat16
    assert dtypes["blocks.0.ffn.0.weight"] == torch.bfloat16
    assert dtypes["patch_embedding.weight"] == torch.bfloat16
    for name in (
        "time_embedding.0.weight",
        "time_projection.1.weight",
        "blocks.0.modulation",
        "head.head.weight",
        "head.modulation",
        "blocks.0.norm3.weight",
        "blocks.0.self_attn.norm_q.weight",
    ):
        assert dtypes[name] == torch.float32, name
    latents = torch.randn(1, 16, 2, 4, 4)
    with torch.no_grad():
        out = model.velocity(latents, torch.tensor([[0.9, 0.1]]), torch.randn(1, 5, 64))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_streaming_writer_round_trips(tmp_path: Path) -> None:
    tensors = {"a": torch.randn(3, 5), "b": torch.randn(7).to(torch.bfloat16), "c": torch.arange(4)}
    file = tmp_path / "x.safetensors"
    write_streaming(file, {k: (v.dtype, tuple(v.shape)) for k, v in tensors.items()}, tensors.__getitem__)
    assert sorted(read_header(file)) == ["a", "b", "c"]
    reread = dict(iter_tensors(file))
    official = load_file(str(file))  # the reference reader agrees with our format
    for name, tensor in tensors.items():
        assert torch.equal(reread[name], tensor) and torch.equal(official[name], tensor)
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]  # no temp file left behind
