"""Pusa for Wan2.2 TI2V-5B, the user's whole path on a tiny release-layout 5B folder (48 channels, Wan2.2 VAE
/16): ``pusa-fw prepare`` clips -> ``pusa-fw train`` a VTA LoRA (and a full fine-tune) -> ``pusa-fw
export-lora`` in ComfyUI's key layout -> ``pusa-fw generate --lora ... --task i2v``; and the adapter's choice
of VAE and geometry from the folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from pusa_fw.cli import main
from pusa_fw.errors import CheckpointError, InputError
from pusa_fw.io import save_image, save_video
from pusa_fw_wan.dit.model import WanDiT
from pusa_fw_wan.lora import LoraSpec, apply_loras
from pusa_fw_wan.testing.tiny import TinyWan
from pusa_fw_wan.testing.tiny22 import build_tiny_wan22
from pusa_fw_wan.train.adapter import WanTI2VTrainAdapter, WanTrainAdapter
from pusa_fw_wan.train.cache import LatentCache

pytestmark = pytest.mark.usefixtures("one_thread")

PUSA_MODULES = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k",
                "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2")


@pytest.fixture(scope="module")
def tiny5b(tmp_path_factory: pytest.TempPathFactory) -> TinyWan:
    """A random tiny TI2V-5B release folder: DiT (dim 32, 2 layers, 48 channels), Wan2.2 VAE, umT5."""
    return build_tiny_wan22(tmp_path_factory.mktemp("release22") / "Wan2.2-TI2V-5B", seed=5)


@pytest.fixture(scope="module")
def cache(tiny5b: TinyWan, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pusa-fw prepare` of two 9-frame 24 fps clips (landscape, portrait) at the 32x64 area, 5 frames each."""
    data = tmp_path_factory.mktemp("data22")
    generator = torch.Generator().manual_seed(0)
    save_video(data / "wide.mp4", torch.rand(3, 9, 32, 64, generator=generator) * 2 - 1, fps=24)
    save_video(data / "tall.mp4", torch.rand(3, 9, 64, 32, generator=generator) * 2 - 1, fps=24)
    (data / "metadata.csv").write_text("file_name,text\nwide.mp4,a red fish swims\ntall.mp4,a bird flies up\n")
    out = data.parent / "cache22"
    flags = ["--height", "32", "--width", "64", "--num-frames", "5", "--fps", "24", "--device", "cpu"]
    assert main(["prepare", str(data), "--out", str(out), "--model", str(tiny5b.root), *flags]) == 0
    return out


def _run_file(path: Path, model: Path, cache: Path, output: Path, **fields: str) -> Path:
    lines = [f'output_dir = "{output}"', "seed = 0", 'precision = "fp32"', 'device = "cpu"',
             *(f"{key} = {value}" for key, value in fields.items()),
             "[model]", f'path = "{model}"', "[lora]", "rank = 4", "alpha = 4.0",
             "[data]", f'source = "{cache}"', "batch_size = 1",
             "[optimizer]", "lr = 0.05", "[logging]", "tensorboard = false", "every = 1"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()
            if '"loss"' in line]


def test_prepare_encodes_48_channel_latents_on_the_32_pixel_grid(cache: Path) -> None:
    index = json.loads((cache / "index.json").read_text())
    assert index["codec"].startswith("wan22-vae:")  # not labelled as a Wan2.1 cache
    assert index["geometry"] == {"temporal_stride": 4, "first_frame_alone": True, "spatial_factor": 16,
                                 "patch_size": 2, "channels": 48}
    source = LatentCache(cache)
    # 5 frames -> 2 latent frames; 32x64 -> 2x4 cells, 64x32 -> 4x2 (buckets on the 32-pixel grid)
    assert [source.bucket(index)[:4] for index in range(2)] == [(48, 2, 2, 4), (48, 2, 4, 2)]


def test_vta_lora_trains_exports_for_comfyui_and_changes_i2v(tiny5b: TinyWan, cache: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_file = _run_file(tmp_path / "lora.toml", tiny5b.root, cache, run, max_steps="3", mode='"lora"')
    assert main(["train", "--config", str(run_file), "--no-progress"]) == 0
    losses = _losses(run)
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))

    lora = tmp_path / "pusa5b.safetensors"
    assert main(["export-lora", str(run), "--out", str(lora)]) == 0
    tensors = load_file(str(lora))
    modules = {key.removeprefix("diffusion_model.").rsplit(".lora_", 1)[0] for key in tensors
               if ".lora_" in key}
    expected = {f"blocks.{block}.{name}" for block in range(2) for name in PUSA_MODULES}
    assert modules == expected and all(key.startswith("diffusion_model.blocks.") for key in tensors)
    assert all(float(tensors[f"diffusion_model.{module}.alpha"]) == 4.0 for module in modules)
    with safe_open(str(lora), "pt") as handle:
        assert int(handle.metadata()["rank"]) == 4

    # The file applied to the 5B base adds exactly the trained delta (alpha / r) B A to each target.
    adapter = load_file(str(run / "checkpoints" / "step-0000003" / "adapter.safetensors"))
    base = WanDiT.from_pretrained(tiny5b.root).eval()
    before = base.blocks[1].ffn[2].weight.detach().clone()
    report = apply_loras(base, [LoraSpec(lora, name="pusa5b")], merge=True)
    (applied,) = report.loras
    assert set(applied.modules) == expected and applied.scales == (1.0,) and applied.unmatched_keys == ()
    delta = adapter["blocks.1.ffn.2.lora_B.weight"] @ adapter["blocks.1.ffn.2.lora_A.weight"]
    torch.testing.assert_close(base.blocks[1].ffn[2].weight - before, delta, rtol=1e-5, atol=1e-6)
    assert delta.abs().max() > 1e-4

    pixels = torch.rand(3, 32, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    image = save_image(tmp_path / "start.png", pixels)
    flags = ["generate", "--model", str(tiny5b.root), "--task", "i2v", "--image", str(image), "--prompt",
             "a red fish swims", "--height", "32", "--width", "64", "--num-frames", "5", "--steps", "2",
             "--cfg", "1", "--seed", "3", "--device", "cpu"]
    latents = {}
    for name, extra in (("base", []), ("lora", ["--lora", str(lora)])):
        saved = tmp_path / f"{name}.safetensors"
        assert main([*flags, *extra, "--out", str(tmp_path / f"{name}.mp4"), "--save-latents", str(saved)]) == 0
        latents[name] = load_file(str(saved))["latents"]
    assert latents["base"].shape == (1, 48, 2, 2, 4)
    assert torch.equal(latents["base"][:, :, 0], latents["lora"][:, :, 0])  # the image latent, held clean
    assert (latents["lora"][:, :, 1:] - latents["base"][:, :, 1:]).abs().max() > 1e-3


def test_full_fine_tune_saves_a_ti2v_dit(tiny5b: TinyWan, cache: Path, tmp_path: Path) -> None:
    run = tmp_path / "full"
    run_file = _run_file(tmp_path / "full.toml", tiny5b.root, cache, run, max_steps="2", mode='"full"')
    assert main(["train", "--config", str(run_file), "--no-progress", "--set", "optimizer.lr=1e-3"]) == 0
    assert len(_losses(run)) == 2
    trained = WanDiT.from_pretrained(run / "checkpoints" / "step-0000002" / "model.safetensors")
    base = WanDiT.from_pretrained(tiny5b.root)
    assert trained.config.is_ti2v and trained.config.in_dim == trained.config.out_dim == 48
    changed = [name for name, value in trained.state_dict().items()
               if not torch.equal(value, base.state_dict()[name])]
    assert "blocks.0.self_attn.q.weight" in changed and "patch_embedding.weight" in changed


def test_adapter_takes_geometry_and_codec_from_the_vae_that_makes_the_dits_latents(
    tiny5b: TinyWan, tiny, tmp_path: Path
) -> None:
    adapter = WanTrainAdapter()
    geometry = adapter.geometry(str(tiny5b.root))
    assert (geometry.spatial_factor, geometry.channels, geometry.spatial_multiple) == (16, 48, 32)
    both = tmp_path / "both"
    shutil.copytree(tiny5b.root, both)
    shutil.copyfile(tiny.vae, both / tiny.vae.name)  # Wan2.1_VAE beside the 5B DiT: tried first by name
    assert adapter.codec(str(both)).geometry.channels == 48
    assert adapter.geometry(str(both)).spatial_factor == 16
    (both / "Wan2.2_VAE.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"takes 48-channel latents; add this model's VAE"):
        adapter.codec(str(both))
    geometry21 = adapter.geometry(str(tiny.root))
    assert (geometry21.spatial_factor, geometry21.channels) == (8, 16)


def test_prepare_refuses_a_wan21_vae_for_the_5b_and_sizes_off_the_32_grid(
    tiny5b: TinyWan, tiny, cache: Path, tmp_path: Path, capsys
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    save_video(data / "a.mp4", torch.zeros(3, 5, 32, 32), fps=24)
    (data / "metadata.csv").write_text("file_name,text\na.mp4,a cat\n")
    base = ["prepare", str(data), "--out", str(tmp_path / "out"), "--model", str(tiny5b.root), "--device", "cpu",
            "--num-frames", "5"]
    assert main([*base, "--vae", str(tiny.vae)]) != 0
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "16-channel latents" in message and "in_dim=48" in message
    assert main([*base, "--height", "48", "--width", "64", "--no-aspect-buckets"]) != 0
    assert "height=48 must be a positive multiple of 32" in capsys.readouterr().err


def test_ti2v_adapter_builds_only_ti2v_dits(tiny5b: TinyWan, tiny) -> None:
    adapter = WanTI2VTrainAdapter()
    assert adapter.name == "wan2.2-ti2v-5b" and adapter.default_lora_targets == WanTrainAdapter.default_lora_targets
    assert adapter.build_model(str(tiny5b.root), None, 0).config.is_ti2v
    small = {"dim": 32, "ffn_dim": 64, "num_heads": 2, "num_layers": 1, "text_dim": 16, "freq_dim": 32}
    random = adapter.build_model(None, small, 0)
    assert random.config.is_ti2v and random.patch_embedding.in_channels == 48
    with pytest.raises(CheckpointError, match="not Wan2.2 TI2V-5B; train it as backbone 'wan2.1-t2v'"):
        adapter.build_model(str(tiny.root), None, 0)
    with pytest.raises(InputError, match="not Wan2.2 TI2V-5B"):
        adapter.build_model(None, {**small, "model_type": "t2v", "in_dim": 16, "out_dim": 16}, 0)


def test_the_ti2v_adapter_is_registered_for_the_5b_backbone() -> None:
    from pusa_fw_train.adapter import get_train_adapter

    assert isinstance(get_train_adapter("wan2.2-ti2v-5b"), WanTI2VTrainAdapter)
    assert type(get_train_adapter("wan2.1-t2v")) is WanTrainAdapter


def test_a_cache_of_the_other_vae_is_refused_before_training(tiny, cache: Path, tmp_path: Path, capsys) -> None:
    """The 48-channel TI2V cache given to a 16-channel Wan2.1 DiT: one line, exit 2, no run started."""
    run = tmp_path / "run"
    run_file = _run_file(tmp_path / "wrong.toml", tiny.root, cache, run, max_steps="1", mode='"lora"')
    assert main(["train", "--config", str(run_file), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "latents have 48 channels but model" in err and "takes 16-channel latents" in err
    assert not (run / "checkpoints").exists()
