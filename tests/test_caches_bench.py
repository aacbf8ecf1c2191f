"""benchmarks/bench_cache.py runs end to end (2 seeds, two caches), and eval-toy's `none` cache is the plain loop."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from pusa_fw.backbone import supports_partial

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_cache.py"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_cache_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_none_cache_in_the_toy_generation_is_the_plain_loop():
    from pusa_fw.caches import CachedBackbone, WorkStats
    from pusa_fw.registry_lookup import lookup
    from pusa_fw_toy.generation import generate_batch
    from pusa_fw_toy.model_dir import load_toy_models
    from pusa_fw_toy.shipped import shipped_model_dir
    from pusa_fw_toy.world import HELD_OUT_SEED_BASE, render_clip

    models = load_toy_models(shipped_model_dir())
    world = models.spec.world
    clips = [render_clip(world, HELD_OUT_SEED_BASE)]
    task = lookup("tasks", "i2v")(policy="multiplier", strength=0.8)
    work = WorkStats()
    args = (models.codec, models.text_encoder, task, "i2v", clips, world)
    plain = generate_batch(models.dit, *args, seeds=[1], steps=6)
    cached = generate_batch(CachedBackbone(models.dit, "none", work=work), *args, seeds=[1], steps=6)
    assert torch.equal(plain, cached) and work.token_block_fraction == 1.0 and work.calls == 6


@pytest.mark.slow  # ~25 s on one core
def test_bench_smoke_two_seeds(bench, tmp_path, capsys):
    configs = [0, 2] + ([6] if supports_partial(__import__("pusa_fw_wan").WanDiT) else [])
    out = tmp_path / "bench.json"
    assert bench.main(["--seeds", "2", "--parts", "a,c", "--configs", *map(str, configs), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "(a) toy quality" in text and "(c) toy rolling and pyramid" in text
    data = json.loads(out.read_text())
    none, tea = data["quality"][0], data["quality"][1]
    assert none["cache"] == "none" and none["token_block_fraction"] == 1.0
    assert none["error_change"] == {"i2v": 0.0, "start-end": 0.0, "extension": 0.0}
    assert 0 < tea["token_block_fraction"] < 1 and set(tea["error_after_px"]) == {"i2v", "start-end", "extension"}
    plans = {row["plan"] for row in data["long_plans"]}
    assert len(plans) == 2 and all(row["token_block_fraction"] <= 1.0 for row in data["long_plans"])
