"""``recipes/reproduce.sh`` -- the script that made the shipped toy weights -- runs end to end at a tiny
size: toy-init, base, pack, gates, two VTA seeds, export, eval, then the shipped folder with a manifest
that verifies. A second run skips every finished stage and rewrites the folder in one swap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pusa_fw_toy.shipped import verify_shipped

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "plugins" / "pusa_fw_toy" / "recipes" / "reproduce.sh"
TINY = {
    "INIT_ARGS": "--dim 32 --layers 1 --heads 2",
    "TRAIN_ARGS": "--max-steps 2 --set data.batch_size=2 --set validation.every=2 --set validation.num_samples=1 "
                  "--set checkpoint.every=1 --set logging.every=1 --set lora.rank=4 --set lora.alpha=4.0",
    "GATE_SEEDS": "2",
    "EVAL_SEEDS": "2",
    "EVAL_ARGS": "--steps 1",
    "LONG_ARGS": "--seeds 2 --steps 1 --frames 17 --long-schedule w9o3-clean --long-schedule w9o3-mult0.2",
}


def _run(tmp_path: Path, runs: str = "runs", **extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **TINY, "RUNS": str(tmp_path / runs), "PYTHON": sys.executable,
           "SHIP_TO": str(tmp_path / "weights"), "DOCS_TO": str(tmp_path / "docs"), "OMP_NUM_THREADS": "1", **extra}
    return subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
                          check=False)


def test_reproduce_script_builds_a_verified_shipped_folder(tmp_path: Path) -> None:
    result = _run(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    weights = tmp_path / "weights"
    manifest = verify_shipped(weights)
    assert {"base/toy.json", "base/diffusion_pytorch_model.safetensors", "vta-s0.safetensors",
            "vta-s1.safetensors"} <= set(manifest["files"])
    training = manifest["training"]
    assert training["base"]["config"]["ptss"]["p_async"] == 0.0
    assert [training[f"vta-s{seed}"]["training_seed"] for seed in (0, 1)] == [0, 1]
    for stage in training.values():
        assert stage["steps"] == 2 and stage["wall_time_s"] > 0
        assert stage["command"].startswith("pusa-fw train --config plugins/pusa_fw_toy/recipes/")
        assert "--resume" in stage["command"]
    assert manifest["gates"]["command"].startswith("pusa-fw eval-toy")
    assert set(manifest["gates"]["results"]) == {"valid", "fit_within_1px", "speed_ratio", "direction_acc"}
    assert manifest["vta_gates"]["command"].startswith("pusa-fw eval-toy")
    assert [result["task"] for result in manifest["vta_gates"]["results"]] == \
        ["i2v", "i2v", "i2v", "start-end", "extension"]
    rows = json.loads((tmp_path / "docs" / "toy_eval.json").read_text())["rows"]
    assert {("i2v", "VTA + noise 0.2"), ("t2v", "base")} <= {(row["task"], row["method"]) for row in rows}
    assert all(row["models"] == 2 for row in rows if row["method"].startswith("VTA"))
    assert (tmp_path / "docs" / "toy_eval.png").stat().st_size > 0
    shipped_text = (weights / "MANIFEST.json").read_text() + (tmp_path / "docs" / "toy_eval.json").read_text()

    assert str(tmp_path) not in shipped_text and str(REPO) not in shipped_text  # no machine path is shipped
    assert "--output-dir $RUNS/base " in training["base"]["command"]
    assert training["base"]["config"]["model"]["path"] == "$RUNS/toy-init"
    assert "base2" not in training and "long_video" not in manifest, "the default flow is the wall-less one"
    assert json.loads((weights / "base" / "toy.json").read_text())["world"]["walls"] == "none"

    stages = (tmp_path / "runs" / "stages.jsonl").read_text()
    again = _run(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "runs" / "stages.jsonl").read_text() == stages, "finished stages must be skipped"
    assert verify_shipped(weights)["files"] == manifest["files"]
    assert not (tmp_path / "weights.partial").exists() and not (tmp_path / "weights.previous").exists()

    # a fresh machine: restart from the committed base, retrain only the VTA stage
    fresh = _run(tmp_path, "fresh-runs", BASE_FROM="shipped", VTA_SEEDS="0")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert not (tmp_path / "fresh-runs" / "base").exists(), "the base was not retrained"
    carried = verify_shipped(weights)
    assert carried["files"]["base/diffusion_pytorch_model.safetensors"] == \
        manifest["files"]["base/diffusion_pytorch_model.safetensors"]
    assert carried["training"]["base"]["command"] == training["base"]["command"]
    assert "carried_from" in carried["training"]["base"] and "vta-s0" in carried["training"]
    assert carried["training"]["vta-s0"]["train_time_s"] > 0

    # the curriculum's first stage from the committed base: only the bounce-world stage and what follows train
    staged = _run(tmp_path, "base1-runs", BASE1_FROM="shipped", VTA_SEEDS="0")
    assert staged.returncode == 0, staged.stderr[-3000:]
    assert not (tmp_path / "base1-runs" / "base").exists() and (tmp_path / "base1-runs" / "base2").is_dir()
    spec = json.loads((tmp_path / "base1-runs" / "base1-model" / "toy.json").read_text())
    assert spec["world"]["walls"] == "bounce" and spec["codec"]["position_ramps"]
    restaged = verify_shipped(weights)["training"]
    assert "carried_from" in restaged["base"] and "carried_from" not in restaged["base2"]
    assert restaged["base"]["bounce_world_pack"]["command"] == (
        "pusa-fw toy-pack $RUNS/base0-model --out $RUNS/base1-model --walls bounce --position-ramps")
    assert restaged["base2"]["steps"] == 2 and restaged["base2"]["config"]["model"]["path"] == "$RUNS/base1-model"
    assert restaged["base3"]["config"]["model"]["path"] == "$RUNS/base2-model"
    assert restaged["base3"]["config"]["ptss"]["held_probability"] == 1.0, "base-held.toml holds a clean frame"
    assert restaged["base3"]["packed"] == {"command": "pusa-fw toy-pack $RUNS/base3 --out $RUNS/base-model",
                                           "weights": "raw"}
    assert json.loads((weights / "base" / "toy.json").read_text())["world"]["walls"] == "bounce"
    manifest = verify_shipped(weights)
    long_video = manifest["long_video"]
    assert long_video["command"].startswith("pusa-fw eval-toy --long")
    assert long_video["best_schedule"] in ("w9o3-clean", "w9o3-mult0.2")
    assert long_video["generate_args"][:4] == ["--window", "9", "--overlap", "3"]
    assert [gate["gate"] for gate in long_video["gates"]][-1] == "loop seam (px)"
    assert {(row["task"], row["frames"]) for row in long_video["rows"]} >= {("rolling", 17), ("loop", 17)}
    assert (tmp_path / "docs" / "toy_long_video.png").stat().st_size > 0
    assert str(tmp_path) not in (tmp_path / "docs" / "toy_long_video.json").read_text()


def test_ship_without_runs_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    from pusa_fw_toy.ship import main

    assert main([str(tmp_path / "runs"), str(tmp_path / "weights")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "reproduce.sh" in error
    assert not (tmp_path / "weights").exists() and not (tmp_path / "weights.partial").exists()
