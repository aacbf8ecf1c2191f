"""The toy models shipped in the package: their files match the manifest, the manifest says how they were
made, they load through ``pusa-fw generate`` and the VTA LoRA keeps a clean-held frame exactly."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest
import torch

from pusa_fw.cli import main
from pusa_fw.errors import CheckpointError
from pusa_fw.io.image import load_image
from pusa_fw_toy.shipped import SHIPPED_ROOT, file_sha256, read_manifest, shipped_lora, shipped_model_dir, verify_shipped

SIZE_LIMIT = 20 * 1024 * 1024


def test_every_shipped_file_matches_the_manifest_sha256() -> None:
    manifest = verify_shipped()
    on_disk = {path.relative_to(SHIPPED_ROOT).as_posix() for path in SHIPPED_ROOT.rglob("*")
               if path.is_file() and path.name != "MANIFEST.json"}
    assert on_disk == set(manifest["files"]), "the manifest must list exactly the shipped files"
    for name, entry in manifest["files"].items():
        assert file_sha256(SHIPPED_ROOT / name) == entry["sha256"]
    assert {"base/diffusion_pytorch_model.safetensors", "vta-s0.safetensors", "vta-s1.safetensors"} <= on_disk


def test_shipped_weights_stay_under_20_mb() -> None:
    total = sum(entry["bytes"] for entry in read_manifest()["files"].values())
    assert total < SIZE_LIMIT, f"shipped weights are {total / 2**20:.1f} MiB"


def test_manifest_says_how_each_model_was_made() -> None:
    manifest = read_manifest()
    assert manifest["machine"]["cpu_count"] >= 1 and manifest["machine"]["torch"]
    base = manifest["training"]["base"]
    assert base["config"]["ptss"]["p_async"] == 0.0 and base["config"]["mode"] == "full"
    recipe = tomllib.loads((SHIPPED_ROOT.parent / "recipes" / "vta.toml").read_text())["ptss"]
    for seed in (0, 1):
        vta = manifest["training"][f"vta-s{seed}"]
        assert vta["config"]["ptss"]["p_async"] > 0 and vta["config"]["mode"] == "lora"
        assert {key: vta["config"]["ptss"][key] for key in recipe} == recipe, "vta.toml made the shipped LoRAs"
        assert vta["training_seed"] == seed
    for stage in manifest["training"].values():
        assert stage["steps"] == stage["config"]["max_steps"], "every shipped stage ran its whole budget"
        assert stage["wall_time_s"] > 0 and "pusa-fw train" in stage["command"]
        assert "seed_offset" in stage["data"]["options"]
    gates = manifest["gates"]
    assert set(gates["results"]) == {"valid", "fit_within_1px", "speed_ratio", "direction_acc"}
    assert gates["passed"] == all(result["passed"] for result in gates["results"].values())


def test_a_damaged_shipped_file_is_named(tmp_path: Path) -> None:
    copy = tmp_path / "weights"
    shutil.copytree(SHIPPED_ROOT, copy)
    target = copy / "vta-s1.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="vta-s1.safetensors.*sha256"):
        verify_shipped(copy)
    target.unlink()
    with pytest.raises(CheckpointError, match="vta-s1.safetensors.*missing"):
        verify_shipped(copy)


def test_unknown_training_seed_names_the_shipped_ones() -> None:
    with pytest.raises(CheckpointError, match=r"choose from \[0, 1\]"):
        shipped_lora(7)


def test_shipped_base_and_vta_run_i2v_through_generate(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from pusa_fw.io.video_read import read_video
    from pusa_fw.io.pixels import uint8_to_video
    from pusa_fw_toy.demo import ASSETS
    from pusa_fw_toy.tracker import track_video
    from pusa_fw_toy.world import WorldConfig

    out = tmp_path / "i2v.mp4"
    status = main(["generate", "--model", str(shipped_model_dir()), "--lora", str(shipped_lora(0)),
                   "--task", "i2v", "--policy", "clean", "--image", str(ASSETS / "i2v_first.png"),
                   "--prompt", "a red square", "--num-frames", "9", "--height", "16", "--width", "16",
                   "--num-steps", "10", "--shift", "2", "--cfg", "1", "--fps", "8", "--out", str(out)])
    assert status == 0, capsys.readouterr().err
    sidecar = json.loads(out.with_suffix(".json").read_text())
    (lora,) = sidecar["loras"]
    assert lora["files"][0]["sha256"] == read_manifest()["files"]["vta-s0.safetensors"]["sha256"]
    dit_hashes = {Path(item["name"]).name: item["sha256"] for item in sidecar["models"]["dit"]["files"]}
    manifest_files = read_manifest()["files"]
    assert dit_hashes["diffusion_pytorch_model.safetensors"] == \
        manifest_files["base/diffusion_pytorch_model.safetensors"]["sha256"]
    video = uint8_to_video(read_video(out).frames)
    track = track_video(video, WorldConfig())
    assert int(track.valid.sum()) >= 7, "a trained model draws the square in most frames"
    image = load_image(ASSETS / "i2v_first.png", (16, 16))
    first = track_video(image.unsqueeze(1), WorldConfig())
    assert torch.allclose(track.centres[0], first.centres[0], atol=0.5), "the video starts where the image has it"
