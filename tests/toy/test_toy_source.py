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


def test_direction_caption_share_names_the_true_direction_in_a_stable_share(toy_dir: Path) -> None:
    source = WorldSource.from_model_dir(toy_dir, length=2000, direction_caption_share=0.5,
                                        caption_dropout=0.1)
    samples = [source.load(index) for index in range(2000)]
    named = [sample for sample in samples if "moving" in sample.caption]
    assert 0.40 < len(named) / 2000 < 0.50  # 0.5 of the 0.9 not dropped, binomial sd 0.011
    assert all(sample.caption == f"{render_clip(source.world, sample.meta['seed']).caption} moving "
               f"{sample.meta['direction']}" for sample in named)
    plain = [sample for sample in samples if sample.caption and "moving" not in sample.caption]
    assert len(plain) > 700 and not any("moving" in sample.caption for sample in plain)
    assert sum(sample.caption == "" for sample in samples) > 150  # dropout still wins over the share
    again = WorldSource.from_model_dir(toy_dir, length=2000, direction_caption_share=0.5, caption_dropout=0.1)
    assert [again.load(index).caption for index in range(0, 2000, 7)] == [samples[i].caption for i in range(0, 2000, 7)]
    first = named[0]
    assert torch.equal(first.context, source.text_encoder.encode([first.caption])[0])
    assert not torch.equal(first.context, source.text_encoder.encode([first.caption.split(" moving")[0]])[0])


def test_direction_caption_share_is_checked(toy_dir: Path) -> None:
    with pytest.raises(InputError, match=r"direction_caption_share=1\.5 must be in \[0, 1\]"):
        WorldSource.from_model_dir(toy_dir, direction_caption_share=1.5)
    source = WorldSource.from_model_dir(toy_dir)
    world = source.world.model_copy(update={"caption_direction": True})
    with pytest.raises(InputError, match="caption_direction=true"):
        WorldSource(world, source.codec, source.text_encoder, direction_caption_share=0.5)
