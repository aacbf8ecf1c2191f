"""The sample order of a run: a seeded permutation per epoch cut into bucketed global batches.

Epoch `e` shuffles the indices with a generator seeded by `(seed, e)`, walks the permutation and fills
one pending batch per bucket; a bucket whose pending batch reaches the global batch size emits it.
Leftovers that never fill a batch are dropped for that epoch (the next epoch's permutation differs, so no
sample is always dropped). The order is identical on every rank; each rank then takes its share of every
global batch (`pusa_fw_train.sharding.shard_global_batch`), so every rank runs the same number of
steps whatever the sample count. The order of epoch `e` is a pure function of `(seed, e, source
buckets)`, so a position `(epoch, batch)` saved in a checkpoint resumes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pusa_fw.errors import InputError

from pusa_fw.training_data import TrainingSource

__all__ = ["DataOrder", "OrderPosition"]


@dataclass
class OrderPosition:
    """Where the run is in the data order: `epoch` and the index of the next batch within it."""

    epoch: int = 0
    batch: int = 0


class DataOrder:
    """Deterministic bucketed global batches of source indices.

    Args:
        source: the training source (only `len` and `bucket` are used).
        batch_size: samples per global batch (all ranks together).
        seed: seed of the per-epoch permutations.
        exclude: indices never used for training (e.g. held out for validation).
    """

    def __init__(
        self,
        source: TrainingSource,
        batch_size: int,
        seed: int,
        *,
        exclude: frozenset[int] = frozenset(),
    ) -> None:
        self.batch_size = batch_size
        self.seed = seed
        self._indices = [index for index in range(len(source)) if index not in exclude]
        self._buckets = {index: source.bucket(index) for index in self._indices}
        self._epoch_cache: tuple[int, list[list[int]]] | None = None
        if not self.batches(0):
            raise InputError(
                f"no bucket holds a full batch of data.batch_size={batch_size} samples among the "
                f"{len(self._indices)} training samples; lower data.batch_size or add samples"
            )

    def batches(self, epoch: int) -> list[list[int]]:
        """The global batches of `epoch`, each a list of `batch_size` source indices."""
        if self._epoch_cache is not None and self._epoch_cache[0] == epoch:
            return self._epoch_cache[1]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        permutation = torch.randperm(len(self._indices), generator=generator).tolist()
        pending: dict[tuple, list[int]] = {}
        batches = []
        for position in permutation:
            index = self._indices[position]
            bucket = pending.setdefault(self._buckets[index], [])
            bucket.append(index)
            if len(bucket) == self.batch_size:
                batches.append(list(bucket))
                bucket.clear()
        self._epoch_cache = (epoch, batches)
        return batches

    def next_batch(self, position: OrderPosition) -> list[int]:
        """The batch at `position`, advancing `position` in place (rolling over to the next epoch)."""
        batches = self.batches(position.epoch)
        if position.batch >= len(batches):
            position.epoch += 1
            position.batch = 0
            batches = self.batches(position.epoch)
            if not batches:  # a new permutation can leave every bucket short; try the next epoch
                return self.next_batch(position)
        batch = batches[position.batch]
        position.batch += 1
        return batch
