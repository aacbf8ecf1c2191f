"""The codec's position channels: ramps that say where each cell is, dropped on decode; a trained DiT
widened for them (`toy-pack --position-ramps`) makes the very same videos until it is trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pusa_fw.cli import main
from pusa_fw.registry_lookup import lookup
from pusa_fw_toy.codec import ToyCodec, ToyCodecConfig, position_ramps
from pusa_fw_toy.generation import generate_batch, task_params
from pusa_fw_toy.model_dir import load_toy_models, read_spec
from pusa_fw_toy.widen import widen_channels
from pusa_fw_toy.world import render_clip

SHIPPED_BASE = Path(__file__).resolve().parents[2] / "plugins" / "pusa_fw_toy" / "weights" / "base"
TINY = ["--dim", "32", "--layers", "1", "--heads", "2"]


@given(height=st.integers(1, 9), width=st.integers(1, 9))
def test_ramps_run_from_minus_one_to_one_along_their_axis(height: int, width: int) -> None:
    ramps = position_ramps(height, width)
    assert ramps.shape == (2, height, width)
    x, y = ramps
    assert torch.equal(x, x[:1].expand(height, width)) and torch.equal(y, y[:, :1].expand(height, width))
    if width > 1:
        assert (x[0, 0], x[0, -1]) == (-1.0, 1.0) and bool((x[0, 1:] > x[0, :-1]).all())
    if height > 1:
        assert (y[0, 0], y[-1, 0]) == (-1.0, 1.0) and bool((y[1:, 0] > y[:-1, 0]).all())


@given(layout=st.sampled_from([ToyCodecConfig(position_ramps=True),
                               ToyCodecConfig(temporal_stride=4, first_frame_alone=True, position_ramps=True)]),
       seed=st.integers(0, 2**31))
def test_ramped_codec_is_lossless_and_its_ramps_fill_every_frame(layout: ToyCodecConfig, seed: int) -> None:
    codec = ToyCodec(layout)
    frames = codec.geometry.num_frames(3)
    generator = torch.Generator().manual_seed(seed)
    video = torch.randint(0, 256, (2, 3, frames, 8, 6), generator=generator).float() / 127.5 - 1.0
    latents = codec.encode(video)
    assert latents.shape == (2, layout.pixel_channels + 2, 3, 4, 3) and codec.geometry.channels == latents.shape[1]
    assert torch.equal(latents[:, -2:], position_ramps(4, 3)[None, :, None].expand(2, -1, 3, -1, -1))
    assert torch.equal(latents[:, :-2], ToyCodec(layout.model_copy(update={"position_ramps": False})).encode(video))
    assert torch.equal(codec.decode(latents), video)


def test_widening_keeps_the_outputs_and_predicts_zero_for_the_new_channels() -> None:
    base = load_toy_models(SHIPPED_BASE)
    tensors = base.dit.state_dict()
    widened = widen_channels(tensors, 2)
    assert widened["patch_embedding.weight"].shape[1] == tensors["patch_embedding.weight"].shape[1] + 2
    assert all(widened[key] is tensors[key] for key in tensors
               if key not in ("patch_embedding.weight", "head.head.weight", "head.head.bias"))
    with pytest.raises(ValueError, match="added=0"):
        widen_channels(tensors, 0)
    with pytest.raises(ValueError, match="missing"):
        widen_channels({"x": torch.zeros(1)}, 2)


def test_toy_pack_position_ramps_makes_the_same_videos(tmp_path: Path) -> None:
    out = tmp_path / "ramped"
    assert main(["toy-pack", str(SHIPPED_BASE), "--out", str(out), "--walls", "bounce", "--position-ramps"]) == 0
    spec = read_spec(out)
    assert spec.codec.position_ramps and spec.world.walls == "bounce"
    config = json.loads((out / "config.json").read_text())
    assert (config["in_dim"], config["out_dim"]) == (14, 14)
    before = main(["toy-pack", str(SHIPPED_BASE), "--out", str(tmp_path / "plain"), "--walls", "bounce"])
    assert before == 0
    videos = []
    for directory in (tmp_path / "plain", out):
        models = load_toy_models(directory)
        world, geometry = models.spec.world, models.codec.geometry
        clips = [render_clip(world, seed) for seed in (5, 6)]
        task = lookup("tasks", "t2v")(**task_params("t2v", "clean", 1.0, world, geometry))
        videos.append(generate_batch(models.dit, models.codec, models.text_encoder, task, "t2v", clips, world,
                                     seeds=[5, 6], steps=4))
    assert torch.equal(videos[0], videos[1]), "zero weights for the new channels change nothing"
    again = tmp_path / "again"
    assert main(["toy-pack", str(out), "--out", str(again), "--position-ramps"]) == 0
    assert json.loads((again / "config.json").read_text())["in_dim"] == 14, "widened once only"


def test_toy_init_position_ramps_sizes_the_dit(tmp_path: Path) -> None:
    assert main(["toy-init", str(tmp_path / "r"), "--walls", "bounce", "--position-ramps", *TINY]) == 0
    models = load_toy_models(tmp_path / "r")
    assert models.spec.codec.position_ramps and models.codec.geometry.channels == 14
    assert models.dit.patch_embedding.weight.shape[1] == 14
