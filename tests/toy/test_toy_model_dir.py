"""Toy model directories: built, loaded, packed from a training checkpoint; bad directories fail clearly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pusa_fw.cli import main
from pusa_fw.errors import CheckpointError
from pusa_fw_toy.model_dir import load_toy_models
from pusa_fw_toy.pack import pack_checkpoint


def _fake_run(toy_dir: Path, run: Path, scale: float) -> dict[str, torch.Tensor]:
    """A run directory with one full checkpoint whose weights are the toy DiT's scaled by `scale`."""
    state = {key: value * scale for key, value in load_toy_models(toy_dir).dit.state_dict().items()}
    checkpoint = run / "checkpoints" / "step-0000010"
    checkpoint.mkdir(parents=True)
    save_file(state, str(checkpoint / "model.safetensors"))
    save_file({key: value * 2 for key, value in state.items()}, str(checkpoint / "ema.safetensors"))
    (checkpoint / "config.json").write_text(json.dumps({"model": {"path": str(toy_dir)}, "mode": "full"}))
    (run / "checkpoints" / "latest").write_text("step-0000010")
    return state


def test_model_dir_loads_with_matching_parts(toy_dir: Path) -> None:
    models = load_toy_models(toy_dir)
    assert models.dit.config.in_dim == models.codec.geometry.channels == 12
    assert models.dit.config.text_len == models.text_encoder.max_length
    assert models.spec.world.num_frames == 9


def test_pack_checkpoint_makes_a_loadable_toy_dir(toy_dir: Path, tmp_path: Path) -> None:
    state = _fake_run(toy_dir, tmp_path / "run", 0.5)
    packed = pack_checkpoint(tmp_path / "run", tmp_path / "packed")
    loaded = load_toy_models(packed).dit.state_dict()
    assert all(torch.equal(loaded[key], state[key]) for key in state)
    assert (packed / "toy.json").read_bytes() == (toy_dir / "toy.json").read_bytes()
    assert main(["toy-pack", str(tmp_path / "run" / "checkpoints" / "step-0000010"), "--out",
                 str(tmp_path / "ema"), "--ema"]) == 0
    ema = load_toy_models(tmp_path / "ema").dit.state_dict()
    assert all(torch.equal(ema[key], state[key] * 2) for key in state)


def test_pack_rejects_weights_of_another_model(toy_dir: Path, tmp_path: Path) -> None:
    _fake_run(toy_dir, tmp_path / "run", 1.0)
    checkpoint = tmp_path / "run" / "checkpoints" / "step-0000010"
    save_file({"blocks.0.norm3.weight": torch.ones(3)}, str(checkpoint / "model.safetensors"))
    with pytest.raises(CheckpointError, match="does not fit the DiT"):
        pack_checkpoint(checkpoint, tmp_path / "packed")
    with pytest.raises(CheckpointError, match="neither a training run"):
        pack_checkpoint(tmp_path, tmp_path / "packed")


def test_broken_manifest_is_a_one_line_error(toy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(toy_dir, broken)
    manifest = json.loads((broken / "toy.json").read_text())
    manifest["codec"]["factor"] = 0
    (broken / "toy.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="codec.factor"):
        load_toy_models(broken)
    assert main(["toy-pack", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "neither a training run" in capsys.readouterr().err


def test_pack_reads_the_dcp_shards_of_a_full_fsdp2_run(toy_dir: Path, tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    state = _fake_run(toy_dir, tmp_path / "run", 0.25)
    checkpoint = tmp_path / "run" / "checkpoints" / "step-0000010"
    for name in ("model.safetensors", "ema.safetensors"):
        (checkpoint / name).unlink()
    shards = {f"model.{key}": value for key, value in state.items()}
    shards.update({f"ema.{key}": value * 3 for key, value in state.items()})
    dcp.save(shards, checkpoint_id=str(checkpoint / "dcp"), no_dist=True)
    for ema, factor in ((False, 1), (True, 3)):
        packed = pack_checkpoint(tmp_path / "run", tmp_path / f"packed-{ema}", ema=ema)
        loaded = load_toy_models(packed).dit.state_dict()
        assert all(torch.equal(loaded[key], state[key] * factor) for key in state)


def test_toy_init_wan_starts_from_a_zero_head_and_patch_1_makes_small_tokens(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    from pusa_fw_toy.model_dir import read_spec

    assert main(["toy-init", str(tmp_path / "wan"), "--dim", "48", "--layers", "1", "--init", "wan",
                 "--patch", "1"]) == 0
    models = load_toy_models(tmp_path / "wan")
    dit = models.dit
    assert read_spec(tmp_path / "wan").codec.patch_size == 1 and tuple(dit.config.patch_size) == (1, 1, 1)
    assert torch.count_nonzero(dit.head.head.weight) == 0 and torch.count_nonzero(dit.head.head.bias) == 0
    assert torch.count_nonzero(dit.blocks[0].self_attn.q.bias) == 0
    query = dit.blocks[0].self_attn.q.weight
    assert query.abs().max() <= (6 / (48 + 48)) ** 0.5 and query.std() > 0.1  # Xavier-uniform, not zero
    assert 0.01 < dit.text_embedding[0].weight.std() < 0.03  # N(0, 0.02^2)
    latents = torch.randn(1, 12, 3, 8, 8)
    context = torch.randn(1, 8, 32)
    velocity = dit(latents, torch.full((1, 3), 0.5), context)
    assert velocity.shape == latents.shape and torch.count_nonzero(velocity) == 0  # the zero head
    assert main(["toy-init", str(tmp_path / "default"), "--dim", "48", "--layers", "1"]) == 0
    assert torch.count_nonzero(load_toy_models(tmp_path / "default").dit.head.head.weight) > 0


def test_toy_init_conflicts_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["toy-init", str(tmp_path / "a"), "--random", "--init", "wan"]) == 2
    assert "--random replaces the init" in capsys.readouterr().err
    assert main(["toy-init", str(tmp_path / "b"), "--patch", "3"]) == 2
    assert "--patch 3 does not tile" in capsys.readouterr().err and not (tmp_path / "b").exists()
