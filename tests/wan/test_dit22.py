"""Wan2.2 TI2V-5B DiT: parity with the official per-token outputs (fixture cases D1-D4), from the released
layouts (one file, shards) and ComfyUI single files, in every weights_dtype.

The fixture README puts the fp32 floor at 1.4e-6 .. 3.3e-6 and suggests 1e-5; we require 5e-6 (measured
here: 2.4e-6 at most, every case and layout). `WanDiT` takes one timestep per latent frame: the official
per-token rows are constant within each frame (t2v: all t; TI2V i2v: frame 0 at 0), so the per-frame
row gives the same network.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pusa_fw.errors import InputError
from pusa_fw_wan import WanConfig, WanDiT
from pusa_fw_wan.dit.checkpoint_source import read_wan_config
from pusa_fw_wan.dit.key_mapping import infer_config
from pusa_fw_wan.dit.storage import LowPrecisionLinear, quantize_fp8, is_large_linear
from pusa_fw_wan.dit.token_timesteps import frame_timesteps_from_tokens, velocity_from_token_timesteps

OUTPUT_TOLERANCE = 5e-6
CASES = ("dit_ti2v_t2v_io", "dit_ti2v_i2v_io", "dit_per_frame_io", "dit_padded_io")

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@pytest.fixture(scope="module")
def dit22_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir.parent / "wan22_reference" / "dit"


@pytest.fixture(scope="module")
def cases(dit22_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {name: load_file(str(dit22_dir / f"{name}.safetensors")) for name in CASES}


@pytest.fixture(scope="module", params=["single", "sharded"])
def layout_dit(request: pytest.FixtureRequest, dit22_dir: Path) -> WanDiT:
    return WanDiT.from_pretrained(dit22_dir / request.param).eval()


@pytest.fixture(scope="module")
def fixture_config(dit22_dir: Path) -> WanConfig:
    return read_wan_config(dit22_dir / "single")


@pytest.fixture(scope="module")
def fixture_state(dit22_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(dit22_dir / "single" / "diffusion_pytorch_model.safetensors"))


def _case_errors(model: WanDiT, case: dict[str, torch.Tensor]) -> tuple[list[float], list[float]]:
    """Max-abs errors per row: official per-token rows, and the per-frame sigmas (float64, as plans hold)."""
    by_token, by_sigma = [], []
    x, context = case["x"][None], case["context"][None]
    with torch.no_grad():
        for row in range(case["out"].shape[0]):
            out = velocity_from_token_timesteps(model, x, case["token_timesteps"][row : row + 1], context)
            by_token.append(_max_abs(out[0], case["out"][row]))
            grid = (x.shape[2], x.shape[3] // 2, x.shape[4] // 2)
            frames = frame_timesteps_from_tokens(case["token_timesteps"][row : row + 1], grid)
            out = model.velocity(x, frames.double() / 1000.0, context)
            by_sigma.append(_max_abs(out[0], case["out"][row]))
    return by_token, by_sigma


def test_config_read_from_the_release_layout(fixture_config: WanConfig) -> None:
    assert fixture_config.model_type == "ti2v" and fixture_config.is_ti2v
    assert (fixture_config.in_dim, fixture_config.out_dim, fixture_config.patch_size) == (48, 48, (1, 2, 2))
    assert (fixture_config.dim, fixture_config.num_heads, fixture_config.text_dim) == (128, 2, 32)


@pytest.mark.parametrize("case_name", CASES)
def test_official_outputs_per_case(layout_dit: WanDiT, cases, case_name: str) -> None:
    by_token, by_sigma = _case_errors(layout_dit, cases[case_name])
    assert max(by_token) <= OUTPUT_TOLERANCE, f"{case_name} per-token rows: {by_token}"
    assert max(by_sigma) <= OUTPUT_TOLERANCE, f"{case_name} per-frame sigmas: {by_sigma}"


def test_i2v_rows_hold_frame_zero_at_timestep_zero(cases) -> None:
    case = cases["dit_ti2v_i2v_io"]
    frames = frame_timesteps_from_tokens(case["token_timesteps"], (4, 2, 5))
    assert torch.equal(frames[:, 0], torch.zeros(3))
    assert torch.equal(frames[:, 1:], case["t"].float()[:, None].expand(3, 3))
    assert torch.equal(frames, case["frame_timesteps"])


def test_padded_rows_drop_the_padding(cases) -> None:
    case = cases["dit_padded_io"]
    assert case["token_timesteps"].shape == (1, 48)  # 40 tokens + 8 padding entries at t
    assert torch.equal(frame_timesteps_from_tokens(case["token_timesteps"], (4, 2, 5)),
                       cases["dit_ti2v_i2v_io"]["frame_timesteps"][1:2])


def test_a_timestep_that_varies_within_a_frame_is_refused(cases, layout_dit: WanDiT) -> None:
    case = cases["dit_ti2v_t2v_io"]
    rows = case["token_timesteps"][:1].clone()
    rows[0, 13] = 500.0  # token 3 of latent frame 1 (10 tokens per frame)
    with pytest.raises(InputError, match=r"vary within latent frame 1 \(sample 0: 500\.0 \.\. 999\.0\)") as info:
        velocity_from_token_timesteps(layout_dit, case["x"][None], rows, case["context"][None])
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="39 entries but the latent has 40 tokens"):
        frame_timesteps_from_tokens(rows[:, :39], (4, 2, 5))
    with pytest.raises(InputError, match=r"must be \[B\]=\[1\] or \[B, F\]=\[1, 4\], got \(1, 40\)"):
        layout_dit.forward_timesteps(case["x"][None], case["token_timesteps"][:1], case["context"][None])


def test_5b_config_inferred_from_comfy_shapes() -> None:
    """A ComfyUI single file has no config.json: the real 5B's shapes give the 5B config."""
    with torch.device("meta"):
        shapes = {name: tuple(t.shape) for name, t in WanDiT(WanConfig.ti2v_5b()).state_dict().items()}
    inferred = infer_config(shapes)
    assert inferred == WanConfig.builtin("ti2v-5B")
    assert (inferred.dim, inferred.num_layers, inferred.num_heads, inferred.ffn_dim) == (3072, 30, 24, 14336)
    wan21 = infer_config({name: shape for name, shape in _wan21_shapes().items()})
    assert wan21.model_type == "t2v" and wan21.in_dim == 16


def _wan21_shapes() -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = WanDiT(WanConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2, text_dim=64))
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def _comfy_tensors(state: dict[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    """The fixture weights as ComfyUI ships/saves them: fp16/bf16 casts, or scaled fp8 with scale_weight."""
    if dtype in ("float16", "bfloat16"):
        return {name: tensor.to(getattr(torch, dtype)) for name, tensor in state.items()}
    tensors: dict[str, torch.Tensor] = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for name, tensor in state.items():
        module = name.rpartition(".")[0]
        if name.endswith(".weight") and is_large_linear(module):
            tensors[name], scale = quantize_fp8(tensor, torch.float8_e4m3fn)
            tensors[f"{module}.scale_weight"] = scale.reshape(())
        else:
            tensors[name] = tensor.to(torch.bfloat16)
    return tensors


@pytest.mark.parametrize("prefix", ["model.diffusion_model.", "diffusion_model.", ""])
@pytest.mark.parametrize("stored", ["float32", "float16", "fp8_scaled"])
def test_comfy_single_files(prefix, stored, fixture_state, fixture_config, cases, tmp_path: Path) -> None:
    tensors = fixture_state if stored == "float32" else _comfy_tensors(fixture_state, stored)
    path = tmp_path / "wan2.2_ti2v_5B.safetensors"  # alone: no config.json beside it, as ComfyUI has them
    save_file({prefix + name: tensor.contiguous() for name, tensor in tensors.items()}, str(path))
    model = WanDiT.from_pretrained(path, config=fixture_config).eval()  # tiny head_dim 64: not inferable
    by_token, by_sigma = _case_errors(model, cases["dit_ti2v_i2v_io"])
    if stored == "float32":
        assert max(by_token + by_sigma) <= OUTPUT_TOLERANCE, by_token + by_sigma
        return
    reference = cases["dit_ti2v_i2v_io"]["out"]
    relative = max(by_sigma) / reference.abs().max().item()
    # measured: float16 file 3.6e-4, scaled fp8 file 1.9e-2 (of the largest output)
    assert relative < {"float16": 2e-3, "fp8_scaled": 0.05}[stored], relative
    if stored == "fp8_scaled":
        assert model.weights_dtype == torch.float8_e4m3fn


# measured error on D2 relative to the largest output: float32 4.7e-7 (the fp32 floor), bfloat16 9.2e-4,
# float16 1.1e-4, float8_e4m3fn 1.9e-2, float8_e5m2 2.5e-2 (bounds: about 3x, under each dtype's unit)
WEIGHTS_BOUNDS = {"float32": None, "bfloat16": 5e-3, "float16": 1e-3, "float8_e4m3fn": 0.05,
                  "float8_e5m2": 0.08}


@pytest.mark.parametrize("weights_dtype", sorted(WEIGHTS_BOUNDS))
def test_every_weights_dtype(weights_dtype: str, dit22_dir: Path, cases) -> None:
    model = WanDiT.from_pretrained(dit22_dir / "sharded", weights_dtype=weights_dtype).eval()
    assert model.weights_dtype == getattr(torch, weights_dtype)
    layer = model.blocks[0].ffn[0]
    assert isinstance(layer, LowPrecisionLinear) == (weights_dtype != "float32")
    assert model.time_projection[1].weight.dtype == torch.float32
    case = cases["dit_ti2v_i2v_io"]
    _, by_sigma = _case_errors(model, case)
    bound = WEIGHTS_BOUNDS[weights_dtype]
    if bound is None:
        assert max(by_sigma) <= OUTPUT_TOLERANCE, by_sigma
    else:
        assert max(by_sigma) / case["out"].abs().max().item() < bound, by_sigma


def test_bf16_compute_stays_close(dit22_dir: Path, cases) -> None:
    model = WanDiT.from_pretrained(dit22_dir / "single", dtype=torch.bfloat16).eval()
    assert model.compute_dtype == torch.bfloat16 and model.head.head.weight.dtype == torch.float32
    case = cases["dit_ti2v_t2v_io"]
    _, by_sigma = _case_errors(model, case)
    assert max(by_sigma) / case["out"].abs().max().item() < 0.015, by_sigma  # measured 3.1e-3


def test_release_config_json_of_the_5b_is_read(tmp_path: Path, dit22_dir: Path) -> None:
    """The released config.json carries no text_dim (read from the weights) and model_type ti2v."""
    release = {"_class_name": "WanModel", "_diffusers_version": "0.33.0", "dim": 128, "eps": 1e-06,
               "ffn_dim": 256, "freq_dim": 256, "in_dim": 48, "model_type": "ti2v", "num_heads": 2,
               "num_layers": 2, "out_dim": 48, "text_len": 512}
    folder = tmp_path / "Wan2.2-TI2V-5B"
    folder.mkdir()
    for file in (dit22_dir / "sharded").iterdir():
        if file.name != "config.json":
            (folder / file.name).write_bytes(file.read_bytes())
    (folder / "config.json").write_text(json.dumps(release))
    config = read_wan_config(folder)
    assert config.text_dim == 32 and config.is_ti2v and config.num_heads == 2
    assert WanConfig.from_official_json(json.loads((dit22_dir / "single" / "config.json").read_text())) == config


def test_ti2v_backbone_factory(dit22_dir: Path, cases, tmp_path: Path) -> None:
    import pusa_fw
    from pusa_fw.errors import CheckpointError
    from pusa_fw.plugins import get_registry

    factory = get_registry().get("backbones", "wan2.2-ti2v-5b")
    assert (factory.geometry.spatial_multiple, factory.geometry.channels) == (32, 48)
    model = pusa_fw.load_backbone("wan2.2-ti2v-5b", dit22_dir / "sharded", dtype=torch.float32).eval()
    _, by_sigma = _case_errors(model, cases["dit_ti2v_i2v_io"])
    assert max(by_sigma) <= OUTPUT_TOLERANCE
    from pusa_fw_wan.vae.model import WanVAE

    vae = WanVAE.from_pretrained(dit22_dir.parent / "vae" / "wan22_vae_tiny.safetensors", dim=None, z_dim=None)
    assert vae.geometry == factory.geometry  # the factory's geometry is its VAE's
    wan21 = tmp_path / "wan21"
    wan21.mkdir()
    with torch.device("meta"):
        config = WanConfig(dim=128, ffn_dim=256, num_heads=1, num_layers=1, text_dim=32)
    save_file({name: torch.zeros(tuple(t.shape)) for name, t in WanDiT(config).state_dict().items()},
              str(wan21 / "diffusion_pytorch_model.safetensors"))
    (wan21 / "config.json").write_text(json.dumps(config.to_official_json()))
    with pytest.raises(CheckpointError, match="16-channel t2v DiT, not Wan2.2 TI2V-5B; load it as the 'wan2.1-t2v'"):
        factory.load(wan21)
