"""`toy-pack --add-blocks`: appended Wan blocks start as the identity, so the deeper DiT makes the very same
videos until it is trained on; bad counts and state dicts fail with the value named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pusa_fw.cli import main
from pusa_fw.registry_lookup import lookup
from pusa_fw_toy.deepen import ZEROED, add_blocks
from pusa_fw_toy.generation import generate_batch, task_params
from pusa_fw_toy.model_dir import load_toy_models
from pusa_fw_toy.world import render_clip

SHIPPED_BASE = Path(__file__).resolve().parents[2] / "plugins" / "pusa_fw_toy" / "weights" / "base"


def _videos(directory: Path) -> torch.Tensor:
    models = load_toy_models(directory)
    world, geometry = models.spec.world, models.codec.geometry
    clips = [render_clip(world, seed) for seed in (7, 8)]
    task = lookup("tasks", "i2v")(**task_params("i2v", "clean", 1.0, world, geometry))
    return generate_batch(models.dit, models.codec, models.text_encoder, task, "i2v", clips, world, seeds=[7, 8],
                          steps=4)


def test_added_blocks_are_the_identity(tmp_path: Path) -> None:
    deeper = tmp_path / "deeper"
    assert main(["toy-pack", str(SHIPPED_BASE), "--out", str(deeper), "--add-blocks", "2"]) == 0
    assert json.loads((deeper / "config.json").read_text())["num_layers"] == 6
    models = load_toy_models(deeper)
    assert len(models.dit.blocks) == 6
    for name in ZEROED:
        assert not bool(models.dit.state_dict()[f"blocks.5.{name}"].any())
    assert torch.equal(_videos(SHIPPED_BASE), _videos(deeper))


def test_add_blocks_copies_the_last_block_and_rejects_bad_input(tmp_path: Path) -> None:
    tensors = load_toy_models(SHIPPED_BASE).dit.state_dict()
    deeper, layers = add_blocks(tensors, 1)
    assert layers == 5
    assert torch.equal(deeper["blocks.4.self_attn.q.weight"], tensors["blocks.3.self_attn.q.weight"])
    assert deeper["blocks.4.self_attn.q.weight"] is not tensors["blocks.3.self_attn.q.weight"]
    with pytest.raises(ValueError, match="added=0"):
        add_blocks(tensors, 0)
    with pytest.raises(ValueError, match="no blocks"):
        add_blocks({"head.head.weight": torch.zeros(1)}, 1)
    assert main(["toy-pack", str(SHIPPED_BASE), "--out", str(tmp_path / "x"), "--add-blocks", "-1"]) == 2
