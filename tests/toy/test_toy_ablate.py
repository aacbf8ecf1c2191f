"""``recipes/ablate.sh`` runs one ablation arm end to end at a tiny size (toy-init with the arm's change,
train with its override, pack, t2v gates) and resumes without redoing finished steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pusa_fw_toy.model_dir import read_spec

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "plugins" / "pusa_fw_toy" / "recipes" / "ablate.sh"
TINY = {"INIT_ARGS": "--dim 32 --layers 1", "STEPS": "2", "SEEDS": "2", "EVAL_ARGS": "--steps 1",
        "TRAIN_ARGS": "--set data.batch_size=2 --set validation.every=2 --set validation.num_samples=1 "
                      "--set checkpoint.every=1 --set logging.every=1"}


def _ablate(tmp_path: Path, arm: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **TINY, "RUNS": str(tmp_path), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(SCRIPT), arm], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600, check=False)


@pytest.mark.parametrize("arm", ["caption-half", pytest.param("patch1", marks=pytest.mark.slow)])
def test_an_ablation_arm_trains_packs_and_reads_its_gates(tmp_path: Path, arm: str) -> None:
    result = _ablate(tmp_path, arm)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tmp_path / "ablate" / arm
    config = json.loads((folder / "run" / "config.json").read_text())
    assert config["max_steps"] == 2
    if arm == "caption-half":
        assert config["data"]["options"]["direction_caption_share"] == 0.5
    else:
        assert read_spec(folder / "init").codec.patch_size == 1
    report = json.loads((folder / "gates" / "eval_toy.json").read_text())
    assert report["settings"]["num_seeds"] == 2 and report["gates"]["checked"] == "t2v of the base model"
    assert int((folder / "wall_time_s").read_text().split()[0]) >= 0
    stamp = (folder / "gates" / "eval_toy.json").stat().st_mtime_ns
    again = _ablate(tmp_path, arm)  # everything is done: nothing is redone
    assert again.returncode == 0 and (folder / "gates" / "eval_toy.json").stat().st_mtime_ns == stamp
    assert len((folder / "wall_time_s").read_text().split()) == 1


def test_an_unknown_arm_is_refused(tmp_path: Path) -> None:
    result = _ablate(tmp_path, "dropout")
    assert result.returncode == 2 and "unknown arm 'dropout'" in result.stderr


def test_diagnose_sweeps_the_sampler_and_prints_one_table(tmp_path: Path, toy_dir: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "SEEDS": "2", "SETTINGS": "1x1 3x2"}
    script = SCRIPT.parent / "diagnose.sh"
    result = subprocess.run(["bash", str(script), str(toy_dir), str(tmp_path / "out")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads((tmp_path / "out" / name / "eval_toy.json").read_text())
               for name in ("shift1-steps1", "shift3-steps2")]
    assert [(report["settings"]["shift"], report["settings"]["steps"]) for report in reports] == [(1.0, 1), (3.0, 2)]
    table = (tmp_path / "out" / "table.md").read_text().splitlines()
    assert table[2].startswith("| shift 1 x 1 steps |") and table[3].startswith("| shift 3 x 2 steps |")
