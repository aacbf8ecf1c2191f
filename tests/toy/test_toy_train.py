"""The toy recipes run end to end through ``pusa-fw train`` (a few steps), so they cannot rot:
toy-init -> base (full, p_async 0) -> toy-pack -> VTA (LoRA, per-frame sigmas) -> eval-toy on the result."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from pusa_fw.cli import main

RECIPES = Path(__file__).resolve().parents[2] / "plugins" / "pusa_fw_toy" / "recipes"
SMALL = ["--set", "data.batch_size=2", "--set", "validation.every=2", "--set", "validation.num_samples=1",
         "--set", "checkpoint.every=1", "--set", "logging.every=1", "--no-progress"]


def _latest(run: Path) -> Path:
    return run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()


def test_toy_recipes_train_base_then_vta(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    init, base, packed, vta = (tmp_path / name for name in ("init", "base", "base-model", "vta"))
    assert main(["toy-init", str(init), "--dim", "32", "--layers", "1", "--heads", "2"]) == 0
    status = main(["train", "--config", str(RECIPES / "base.toml"), "--output-dir", str(base), "--max-steps", "2",
                   "--set", f"model.path={init}", "--set", f"data.options.model_dir={init}", *SMALL])
    assert status == 0, capsys.readouterr().err
    saved = json.loads((base / "config.json").read_text())
    assert saved["mode"] == "full" and saved["ptss"]["p_async"] == 0.0
    assert (_latest(base) / "model.safetensors").is_file() and (_latest(base) / "ema.safetensors").is_file()
    log = [json.loads(line) for line in (base / "log.jsonl").read_text().splitlines()]
    assert any("loss" in record for record in log)
    assert main(["toy-pack", str(base), "--ema", "--out", str(packed)]) == 0
    # a curriculum stage: the same weights packed into the bounce world, then trained on there
    bounced = tmp_path / "base-bounce"
    assert main(["toy-pack", str(base), "--ema", "--out", str(bounced), "--walls", "bounce"]) == 0
    world = json.loads((bounced / "toy.json").read_text())["world"]
    assert world["walls"] == "bounce" and world["speed"] == 1.0
    assert (bounced / "diffusion_pytorch_model.safetensors").read_bytes() == \
        (packed / "diffusion_pytorch_model.safetensors").read_bytes()
    assert json.loads((packed / "toy.json").read_text())["world"]["walls"] == "none"
    status = main(["train", "--config", str(RECIPES / "base-continue.toml"), "--output-dir", str(tmp_path / "base2"),
                   "--max-steps", "1", "--set", f"model.path={bounced}", "--set", f"data.options.model_dir={bounced}",
                   *SMALL])
    assert status == 0, capsys.readouterr().err
    status = main(["train", "--config", str(RECIPES / "vta.toml"), "--output-dir", str(vta), "--max-steps", "2",
                   "--set", f"model.path={packed}", "--set", f"data.options.model_dir={packed}",
                   "--set", "lora.rank=4", "--set", "lora.alpha=4.0", *SMALL])
    assert status == 0, capsys.readouterr().err
    saved = json.loads((vta / "config.json").read_text())
    recipe = tomllib.loads((RECIPES / "vta.toml").read_text())["ptss"]
    assert saved["mode"] == "lora" and saved["ptss"]["p_async"] > 0, "VTA trains per-frame sigmas"
    assert {key: saved["ptss"][key] for key in recipe} == recipe
    adapter = _latest(vta) / "adapter.safetensors"
    assert adapter.is_file()
    capsys.readouterr()
    assert main(["eval-toy", "--base", str(packed), "--lora", str(adapter), "--seeds", "2", "--steps", "1",
                 "--task", "i2v", "--out", str(tmp_path / "eval")]) == 0
    rows = json.loads((tmp_path / "eval" / "eval_toy.json").read_text())["rows"]
    assert ("i2v", "VTA + noise 0.2") in {(row["task"], row["method"]) for row in rows}
