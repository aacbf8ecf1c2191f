"""`WorldSource` is a `TrainingSource`: same sample for the same index, shapes its bucket promises, latents
that decode back to the world clip, and a stable caption dropout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pusa_fw.errors import InputError
from pusa_fw.training_data import TrainingSample, TrainingSource
from pusa_fw_toy.codec import ToyCodec
from pusa_fw_toy.source import WorldSource
from pusa_fw_toy.world import HELD_OUT_SEED_BASE, render_clip


def test_world_source_is_a_deterministic_training_source(toy_dir: Path) -> None:
    source = WorldSource.from_model_dir(toy_dir, length=50, seed_offset=100)
    assert isinstance(source, TrainingSource) and len(source) == 50
    first, again = source.load(7), source.load(7)
    assert isinstance(first, TrainingSample)
    assert torch.equal(first.latents, again.latents) and torch.equal(first.context, again.context)
    assert first.meta["seed"] == 107
    clip = render_clip(source.world, 107)
    assert torch.equal(ToyCodec(source.codec.config).decode(first.latents.unsqueeze(0))[0], clip.video)
    assert first.caption == clip.caption
    assert torch.equal(first.context, source.text_encoder.encode([clip.caption])[0])
    shape = tuple(first.latents.shape) + tuple(first.context.shape)
    assert all(source.bucket(index) == shape for index in range(5))
    assert not torch.equal(source.load(8).latents, first.latents)


def test_caption_dropout_is_stable_and_near_its_rate(toy_dir: Path) -> None:
    source = WorldSource.from_model_dir(toy_dir, length=2000, caption_dropout=0.2)
    empty = [index for index in range(2000) if source.load(index).caption == ""]
    assert 0.16 < len(empty) / 2000 < 0.24  # binomial sd 0.009: > 4 sd either side
    assert [index for index in range(2000) if source.load(index).caption == ""] == empty
    blank = source.load(empty[0]).context
    assert torch.equal(blank, source.text_encoder.encode([""])[0])


@pytest.mark.parametrize("options", [
    {"length": 0}, {"seed_offset": HELD_OUT_SEED_BASE - 5, "length": 10}, {"caption_dropout": 1.0},
])
def test_bad_source_settings_fail_with_the_fix(toy_dir: Path, options: dict) -> None:
    with pytest.raises(InputError):
        WorldSource.from_model_dir(toy_dir, **options)


def test_index_outside_the_source_is_an_error(toy_dir: Path) -> None:
    with pytest.raises(InputError, match="outside"):
        WorldSource.from_model_dir(toy_dir, length=3).load(3)
