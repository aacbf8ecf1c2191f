"""``pusa-fw toy-init --walls bounce`` records a bouncing world (1 px/frame at any clip length) in toy.json,
and ``pusa-fw train`` on that directory trains on clips whose square turns back at the walls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pusa_fw.cli import main
from pusa_fw_toy.model_dir import read_spec

RECIPES = Path(__file__).resolve().parents[2] / "plugins" / "pusa_fw_toy" / "recipes"
TINY = ["--dim", "32", "--layers", "1", "--heads", "2"]
SMALL = ["--set", "data.batch_size=2", "--set", "validation.every=100", "--set", "checkpoint.every=2",
         "--set", "logging.every=1", "--no-progress"]


def test_default_walls_keep_the_wall_less_world(tmp_path: Path) -> None:
    assert main(["toy-init", str(tmp_path / "plain"), "--num-frames", "17", *TINY]) == 0
    world = read_spec(tmp_path / "plain").world
    assert (world.walls, world.num_frames, world.speed) == ("none", 17, 0.5)


def test_bounce_world_round_trips_through_toy_json(tmp_path: Path) -> None:
    root = tmp_path / "bounce"
    assert main(["toy-init", str(root), "--walls", "bounce", "--num-frames", "17", *TINY]) == 0
    recorded = json.loads((root / "toy.json").read_text())["world"]
    assert recorded["walls"] == "bounce" and recorded["speed"] == 1.0 and recorded["num_frames"] == 17
    world = read_spec(root).world
    assert (world.walls, world.num_frames, world.speed) == ("bounce", 17, 1.0)
    assert main(["toy-init", str(tmp_path / "long"), "--walls", "bounce", "--num-frames", "65", *TINY]) == 0
    assert read_spec(tmp_path / "long").world.speed == 1.0, "the bounce speed does not shrink with the clip"


def test_bad_walls_value_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["toy-init", str(tmp_path / "x"), "--walls", "wrap"]) == 2
    assert "--walls: invalid choice: 'wrap'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_train_on_a_bounce_dir_trains_on_bounce_clips(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from pusa_fw_toy.codec import ToyCodec
    from pusa_fw_toy.world import render_clip
    from pusa_fw_train.sources import open_source

    init, run = tmp_path / "init", tmp_path / "run"
    assert main(["toy-init", str(init), "--walls", "bounce", "--num-frames", "17", *TINY]) == 0
    status = main(["train", "--config", str(RECIPES / "base.toml"), "--output-dir", str(run),
                   "--max-steps", "2", "--set", f"model.path={init}",
                   "--set", f"data.options.model_dir={init}", *SMALL])
    assert status == 0, capsys.readouterr().err
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any("loss" in record for record in log)
    data = json.loads((run / "config.json").read_text())["data"]
    source = open_source(data["source"], data["options"])  # the source exactly as the run opened it
    assert source.world.walls == "bounce" and source.world.num_frames == 17
    index = 0  # sample 0 is seed 0, whose square reaches a wall within 17 frames and turns back
    clip = render_clip(source.world, source.seed_offset + index)
    turns = (clip.headings[1:] != clip.headings[:-1]).any(dim=1).nonzero().flatten().tolist()
    assert turns, "seed 0 of the bounce world turns at a wall"
    assert (clip.headings[turns[0] + 1] == -clip.headings[turns[0]]).all()
    half = source.world.square / 2
    assert bool(((clip.centres >= half) & (clip.centres <= source.world.size - half)).all()), "never outside"
    steps = (clip.centres[1:] - clip.centres[:-1]).norm(dim=1)
    assert torch.allclose(steps[: turns[0]], torch.ones(turns[0], dtype=steps.dtype)), "1 px/frame before it"
    sample = source.load(index)
    assert sample.meta["seed"] == 0 and sample.meta["direction"] == clip.direction
    expected = ToyCodec(read_spec(init).codec).encode(clip.video.unsqueeze(0))[0]
    assert torch.equal(sample.latents, expected), "the training sample is the bounce clip"
