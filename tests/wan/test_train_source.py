"""The training data contract: `TrainingSource` and the in-memory implementation."""

from __future__ import annotations

import pytest
import torch

from pusa_fw.errors import InputError
from pusa_fw_wan.train.source import InMemorySource, TrainingSample, TrainingSource


def test_in_memory_source_follows_the_protocol_and_is_deterministic():
    source = InMemorySource.random(3, (4, 2, 4, 4), (5, 8), seed=1)
    assert isinstance(source, TrainingSource)
    assert len(source) == 3
    assert source.bucket(0) == (4, 2, 4, 4, 5, 8)
    first, again = source.load(2), source.load(2)
    assert torch.equal(first.latents, again.latents) and torch.equal(first.context, again.context)
    other = InMemorySource.random(3, (4, 2, 4, 4), (5, 8), seed=1)
    assert torch.equal(other.load(1).latents, source.load(1).latents)
    assert not torch.equal(source.load(0).latents, source.load(1).latents)


def test_in_memory_source_rejects_bad_input():
    with pytest.raises(InputError, match="at least one sample"):
        InMemorySource([])
    bad = TrainingSample(latents=torch.zeros(2, 2), context=torch.zeros(1, 1))
    with pytest.raises(InputError, match=r"\[C, F, H, W\]"):
        InMemorySource([bad])
    source = InMemorySource.random(1, (1, 1, 1, 1), (1, 1))
    with pytest.raises(InputError, match="outside"):
        source.load(1)
