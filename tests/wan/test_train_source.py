"""The training data contract: `TrainingSource` and the in-memory implementation."""

from __future__ import annotations

import pytest
import torch

from pusa_fw.errors import InputError
from pusa_fw.training_data import InMemorySource, TrainingSample, TrainingSource


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


def _two_bucket_source() -> InMemorySource:
    small = InMemorySource.random(5, (4, 2, 4, 4), (3, 8), seed=1)
    large = InMemorySource.random(4, (4, 3, 4, 4), (3, 8), seed=2)
    return InMemorySource([*(small.load(i) for i in range(5)), *(large.load(i) for i in range(4))])


def test_data_order_is_bucketed_seeded_and_resumable():
    from pusa_fw_train.order import DataOrder, OrderPosition

    source = _two_bucket_source()
    order = DataOrder(source, batch_size=2, seed=5, exclude=frozenset({8}))
    for epoch in range(4):
        batches = order.batches(epoch)
        assert len(batches) == 3  # 5 small -> 2 batches, 3 large (one held out) -> 1 batch
        for batch in batches:
            assert len(batch) == 2 and len({source.bucket(i) for i in batch}) == 1 and 8 not in batch
        used = [i for batch in batches for i in batch]
        assert len(set(used)) == len(used)
    assert order.batches(0) != order.batches(1)
    assert DataOrder(source, 2, seed=5, exclude=frozenset({8})).batches(2) == order.batches(2)
    position = OrderPosition()
    walked = [order.next_batch(position) for _ in range(7)]
    assert (position.epoch, position.batch) == (2, 1)
    resumed = OrderPosition(epoch=1, batch=2)
    assert order.next_batch(resumed) == walked[5]
    with pytest.raises(InputError, match="no bucket holds a full batch of data.batch_size=6"):
        DataOrder(source, batch_size=6, seed=0)


def test_sources_by_name_factory_path_and_errors(tmp_path):
    from pusa_fw_train.sources import open_source, register_source

    source = open_source("random", {"count": 3, "latent_shape": [16, 2, 4, 4], "context_shape": [2, 8]})
    assert len(source) == 3 and source.bucket(0) == (16, 2, 4, 4, 2, 8)
    register_source("two-samples", lambda: InMemorySource.random(2, (1, 1, 1, 1), (1, 1)))
    assert len(open_source("two-samples", {})) == 2
    with pytest.raises(InputError, match="unknown training source 'nope'"):
        open_source("nope", {})
    with pytest.raises(InputError, match="rejected data.options"):
        open_source("random", {"colour": "red"})
    with pytest.raises(InputError, match="cannot import training source factory"):
        open_source("no_such_module:factory", {})


def test_the_train_guides_run_file_is_a_valid_config():
    import re
    from pathlib import Path

    import tomllib

    from pusa_fw_train.config import validate_train_config

    guide = (Path(__file__).resolve().parents[2] / "docs" / "how-to" / "train.md").read_text(encoding="utf-8")
    run_file = re.search(r"```toml\n(.*?)```", guide, re.DOTALL).group(1)
    config = validate_train_config(tomllib.loads(run_file))
    assert config.ptss.p_async == 0.5 and config.optimizer.schedule == "cosine" and config.mode == "lora"
