"""``pusa-fw generate --model DIR`` on a tiny Wan2.2 TI2V-5B release folder (the reference fixture's sharded
DiT and Wan2.2 VAE, a tiny umT5): t2v, the model's own i2v (latent frame 0 held clean, the image latent bit
for bit), every pusa-fw task through its plan, the official defaults, and the geometry read from the VAE
(/16, 48 channels: sizes are multiples of 32)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pusa_fw.cli import main
from pusa_fw.io import save_image, save_video
from pusa_fw_wan.cli.generate_config import GenerateConfig, validate_config
from pusa_fw_wan.cli.generate_defaults import with_model_defaults
from pusa_fw_wan.cli.generate_run import run_generate
from pusa_fw_wan.pipeline.loading import model_geometry, resolve_model_paths
from pusa_fw_wan.pipeline.model_defaults import WAN21_T2V_DEFAULTS, WAN22_TI2V_5B_DEFAULTS
from pusa_fw_wan.testing.tiny import TinyWan
from pusa_fw_wan.testing.tiny22 import build_tiny_wan22

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"prompt": "a cat on the beach", "height": 64, "width": 96, "num_steps": 2, "cfg": 1.0, "seed": 3}
FAST_FLAGS = ["--prompt", "a cat on the beach", "--height", "64", "--width", "96", "--steps", "2", "--cfg", "1",
              "--seed", "3"]


@pytest.fixture(scope="module")
def tiny22(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyWan:
    reference = fixtures_dir.parent / "wan22_reference"
    return build_tiny_wan22(tmp_path_factory.mktemp("release") / "Wan2.2-TI2V-5B",
                            dit_from=reference / "dit" / "sharded",
                            vae_from=reference / "vae" / "wan22_vae_tiny.safetensors")


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media22")
    generator = torch.Generator().manual_seed(0)
    paths = {f"k{index}": save_image(folder / f"k{index}.png", torch.rand(3, 70, 100, generator=generator) * 2 - 1)
             for index in range(3)}  # odd sizes: fitted to 64x96
    paths["clip"] = save_video(folder / "clip.mp4", torch.rand(3, 9, 64, 96, generator=generator) * 2 - 1)
    return paths


def _run(tiny22: TinyWan, tmp_path: Path, **values):
    config = validate_config({"model": tiny22.root, **FAST, "out": tmp_path / "out.mp4", **values}, "option")
    return run_generate(config)


def test_release_folder_resolves_to_the_wan22_vae_and_its_geometry(tiny22: TinyWan) -> None:
    assert sorted(path.name for path in tiny22.root.iterdir() if path.suffix == ".safetensors")[:2] == [
        "Wan2.2_VAE.safetensors", "diffusion_pytorch_model-00001-of-00002.safetensors"]
    paths = resolve_model_paths(tiny22.root, None, None, None)
    assert paths.vae.name == "Wan2.2_VAE.safetensors"
    geometry = model_geometry(paths)
    assert (geometry.spatial_factor, geometry.channels, geometry.spatial_multiple) == (16, 48, 32)
    assert geometry.latent_shape(121, 704, 1280) == (48, 31, 44, 80)


def test_t2v_writes_a_video_from_48_channel_latents(tiny22: TinyWan, tmp_path: Path) -> None:
    outcome = _run(tiny22, tmp_path, num_frames=9, save_latents=tmp_path / "latents.safetensors")
    assert outcome.result.latents.shape == (1, 48, 3, 4, 6)
    assert outcome.result.video.shape == (3, 9, 64, 96)
    assert outcome.result.clean_frames == []
    sidecar = json.loads(outcome.sidecar_path.read_text())
    # official defaults where the run set nothing: unipc sampler, shift 5, 24 fps
    assert sidecar["sampling"]["sampler"] == "unipc" and sidecar["output"]["fps"] == 24
    assert sidecar["sampling"]["num_steps"] == 2 and sidecar["config"]["model"] == str(tiny22.root)


def test_i2v_holds_the_image_latent_clean_as_the_official_ti2v(tiny22: TinyWan, media, tmp_path: Path) -> None:
    outcome = _run(tiny22, tmp_path, task="i2v", image=media["k0"], num_frames=9)
    result = outcome.result
    assert result.clean_frames == [0]  # sigma 0 in every state and model input: the DiT sees t = 0 there
    assert torch.equal(result.latents[:, :, 0], result.source_latents[:, :, 0])
    assert not torch.equal(result.latents[:, :, 1], result.source_latents[:, :, 1])
    plan = result.plan
    assert bool((plan.input_sigmas[:, 0] == 0).all()) and bool((plan.input_sigmas[0, 1:] > 0.99).all())
    sidecar = json.loads(outcome.sidecar_path.read_text())
    assert sidecar["config"]["task_params"] == {"strength": 1.0}
    # The held latent is the VAE's latent of the fitted image (the fixture VAE, encode_image).
    from pusa_fw.io.image import load_image
    from pusa_fw_wan.vae.model import WanVAE

    vae = WanVAE.from_pretrained(tiny22.vae, dim=None, z_dim=None)
    image = load_image(media["k0"], size=(64, 96))
    with torch.no_grad():
        expected = vae.encode_image(image[None])
    assert torch.equal(result.source_latents[:, :, :1], expected.reshape(result.source_latents[:, :, :1].shape))


def test_i2v_with_a_pusa_strength_keeps_it(tiny22: TinyWan, media, tmp_path: Path) -> None:
    outcome = _run(tiny22, tmp_path, task="i2v", image=media["k0"], num_frames=5, task_params={"strength": 0.8})
    assert outcome.result.clean_frames == []  # multiplier 0.2: frame 0 noised once, then denoised


TASK_CASES = {
    "start-end": {"num_frames": 9, "keyframe": ["0:{k0}:1.0", "8:{k1}:0.9"]},
    "keyframes": {"num_frames": 9, "keyframe": ["0:{k0}", "4:{k1}", "8:{k2}"]},
    "extension": {"num_frames": 13, "video": "{clip}", "task_params": {"given_frames": 5, "strengths": [1.0]}},
    "rolling": {"num_frames": 13, "image": "{k0}", "task_params": {"window": 9, "overlap": 5},
                "prompt_at": ["8:a dog runs"]},
}


@pytest.mark.parametrize("task_name", sorted(TASK_CASES))
def test_every_pusa_task_runs_through_its_plan(task_name: str, tiny22: TinyWan, media, tmp_path: Path) -> None:
    def fill(value):
        if isinstance(value, str):
            return value.format(**{name: str(path) for name, path in media.items()})
        return [fill(item) for item in value] if isinstance(value, list) else value

    values = {name: fill(value) for name, value in TASK_CASES[task_name].items()}
    outcome = _run(tiny22, tmp_path, task=task_name, **values)
    result = outcome.result
    frames = values["num_frames"]
    assert result.video.shape == (3, frames, 64, 96)
    assert result.latents.shape == (1, 48, (frames - 1) // 4 + 1, 4, 6)
    for frame in result.clean_frames:  # every frame held at sigma 0 is its source latent, bit for bit
        assert torch.equal(result.latents[:, :, frame], result.source_latents[:, :, frame])
    if task_name in ("start-end", "extension"):
        assert 0 in result.clean_frames


def test_official_defaults_fill_what_the_run_leaves_unset(tiny22: TinyWan, tiny: TinyWan) -> None:
    config = with_model_defaults(validate_config({"model": tiny22.root, "prompt": "a cat"}, "option"))
    official = {"num_frames": 121, "height": 704, "width": 1280, "fps": 24, "num_steps": 50, "shift": 5.0,
                "cfg": 5.0, "sampler": "unipc"}
    assert {name: getattr(config, name) for name in official} == official
    assert WAN22_TI2V_5B_DEFAULTS.generate_values() == official
    given = with_model_defaults(validate_config(
        {"model": tiny22.root, "prompt": "a", "height": 480, "width": 832, "task": "i2v",
         "task_params": {"policy": "clean"}}, "option"))
    assert (given.height, given.width, given.num_frames, given.task_params) == (480, 832, 121, {"policy": "clean"})
    preset = with_model_defaults(validate_config({"model": tiny22.root, "prompt": "a", "preset": "lightx2v"},
                                                 "option"))
    assert (preset.num_steps, preset.cfg, preset.sampler, preset.height) == (4, 1.0, "euler", 704)
    wan21 = validate_config({"model": tiny.root, "vae": tiny.vae, "prompt": "a cat", "task": "i2v"}, "option")
    assert with_model_defaults(wan21) == wan21  # the Wan2.1 defaults are GenerateConfig's own
    fields = GenerateConfig.model_fields
    assert {name: fields[name].default for name in official} == WAN21_T2V_DEFAULTS.generate_values()


def test_720p_is_accepted_and_other_sizes_refused_in_one_line(
    tiny22: TinyWan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import pusa_fw_wan.pipeline.loading as loading

    class Reached(Exception):
        """Every check passed: the run reached loading."""

    def stop(*args, **kwargs):
        raise Reached

    monkeypatch.setattr(loading, "load_models", stop)
    base = ["generate", "--model", str(tiny22.root), "--prompt", "a cat", "--out", str(tmp_path / "x.mp4")]
    with pytest.raises(Reached):
        main([*base, "--height", "704", "--width", "1280"])
    for flag, value, message in (("--height", "720", "height=720 must be a positive multiple of 32; e.g. 704"),
                                 ("--width", "1296", "width=1296 must be a positive multiple of 32; e.g. 1280"),
                                 ("--num-frames", "120", "num_frames=120 is not of the form 4n+1; use 117 or 121")):
        assert main([*base, flag, value]) == 2
        error = capsys.readouterr().err.strip()
        assert error == f"pusa-fw: error: {message}", error


def test_a_wan21_vae_with_the_5b_dit_is_refused(tiny22: TinyWan, tiny: TinyWan, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["generate", "--model", str(tiny22.root), "--vae", str(tiny.vae), *FAST_FLAGS,
                   "--num-frames", "5", "--out", str(tmp_path / "x.mp4")])
    assert status == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "makes 16-channel latents but the DiT" in error and "in_dim=48" in error
    assert list(tmp_path.iterdir()) == []


def test_random_tiny_release_folder(tmp_path: Path) -> None:
    """Without fixtures, `build_tiny_wan22` writes a random TI2V set that generate runs on."""
    tiny = build_tiny_wan22(tmp_path / "random22")
    outcome = _run(tiny, tmp_path, num_frames=5)
    assert outcome.result.latents.shape == (1, 48, 2, 4, 6)


def test_the_pipeline_refuses_a_vae_of_another_model(tiny22: TinyWan, tiny: TinyWan) -> None:
    from pusa_fw.errors import InputError
    from pusa_fw_wan import WanDiT
    from pusa_fw_wan.pipeline.wan import WanPipeline
    from pusa_fw_wan.vae.model import WanVAE

    dit = WanDiT.from_pretrained(tiny22.root)
    wan21_vae = WanVAE.from_pretrained(tiny.vae, dim=None, z_dim=None)
    with pytest.raises(InputError, match="makes 16-channel latents but the DiT takes in_dim=48"):
        WanPipeline(dit, wan21_vae, text_encoder=None)
    pipeline = WanPipeline(dit, WanVAE.from_pretrained(tiny22.vae, dim=None, z_dim=None),
                           text_encoder=type("Text", (), {"model": torch.nn.Linear(1, 1)})())
    assert pipeline.defaults is WAN22_TI2V_5B_DEFAULTS and pipeline.geometry.spatial_multiple == 32
