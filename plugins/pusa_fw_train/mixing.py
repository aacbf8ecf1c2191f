"""Several datasets in one run: `MixedSource` concatenates `TrainingSource`s, each repeated a whole number of
times per epoch (its weight in the mix), and `CaptionDropout` swaps a sample's text context for a cached
empty-prompt embedding with a fixed probability.

The mixed index space lists dataset 0's samples ``repeats[0]`` times, then dataset 1's, and so on; the
trainer's seeded permutation shuffles it like any source, so a dataset with ``repeats = 3`` is seen three
times as often per sample as one with ``repeats = 1``. Whether a sample's caption is dropped is a keyed draw
of ``(seed, step, micro-step, sample index)``, independent of the PTSS and noise draws, so a resumed run drops
the same captions.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Hashable, Sequence
from dataclasses import replace

import torch

from pusa_fw.errors import InputError
from pusa_fw.training_data import TrainingSample, TrainingSource

__all__ = ["MixedSource", "apply_caption_dropout", "caption_dropped", "load_empty_context"]


class MixedSource:
    """A `TrainingSource` over several sources, each repeated ``repeats`` times (see the module docstring).

    Args:
        sources: the datasets, in config order.
        repeats: how many times each is listed per epoch (>= 1).
    """

    def __init__(self, sources: Sequence[TrainingSource], repeats: Sequence[int]) -> None:
        if len(sources) != len(repeats) or not sources:
            raise InputError("data.datasets needs at least one dataset, each with its repeats")
        self._sources = list(sources)
        self._lengths = [len(source) for source in sources]
        self._starts: list[int] = []
        total = 0
        for position, (length, count) in enumerate(zip(self._lengths, repeats, strict=True)):
            if length == 0:
                raise InputError(f"data.datasets[{position}] holds no samples")
            self._starts.append(total)
            total += length * int(count)
        self._total = total

    def __len__(self) -> int:
        return self._total

    def locate(self, index: int) -> tuple[int, int]:
        """``(dataset position, index within it)`` of mixed index `index`."""
        if not 0 <= index < self._total:
            raise InputError(f"index {index} is outside [0, {self._total})")
        dataset = bisect.bisect_right(self._starts, index) - 1
        return dataset, (index - self._starts[dataset]) % self._lengths[dataset]

    def bucket(self, index: int) -> Hashable:
        dataset, local = self.locate(index)
        return self._sources[dataset].bucket(local)

    def load(self, index: int) -> TrainingSample:
        dataset, local = self.locate(index)
        sample = self._sources[dataset].load(local)
        return replace(sample, meta={**sample.meta, "dataset": dataset})


def caption_dropped(seed: int, step: int, micro_step: int, index: int, probability: float) -> bool:
    """Whether sample `index` of a micro-batch trains with the empty prompt (a keyed, reproducible coin)."""
    if probability <= 0:
        return False
    text = f"pusa-fw-caption-dropout:{seed}:{step}:{micro_step}:{index}".encode()
    coin = int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") / 2.0**64
    return coin < probability


def apply_caption_dropout(
    samples: Sequence[TrainingSample],
    indices: Sequence[int],
    empty_context: torch.Tensor,
    *,
    seed: int,
    step: int,
    micro_step: int,
    probability: float,
) -> list[TrainingSample]:
    """`samples` with the contexts of the dropped ones replaced by `empty_context` `[L, D]` (caption "")."""
    return [
        replace(sample, context=empty_context, caption="")
        if caption_dropped(seed, step, micro_step, index, probability)
        else sample
        for sample, index in zip(samples, indices, strict=True)
    ]


def load_empty_context(path: str | None, source: TrainingSource) -> torch.Tensor:
    """The empty prompt's embedding `[L, D]`: from `path` (tensor ``context``), else the source's cached one.

    Raises:
        InputError: neither a file nor a source that caches one.
    """
    if path is not None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            context = load_file(path).get("context")
        except (OSError, SafetensorError) as error:
            raise InputError(f"data.empty_context {path!r} cannot be read: {error}") from None
        if context is None or context.ndim != 2:
            raise InputError(f"data.empty_context {path!r} holds no [L, D] tensor named 'context'")
        return context.float()
    cached = getattr(source, "empty_context", None)
    if cached is None:
        raise InputError(
            "data.caption_dropout needs the empty prompt's embedding: set data.empty_context to a "
            ".safetensors file with a [L, D] 'context' tensor, or use a source that caches one "
            "(pusa-fw prepare does)"
        )
    return cached().float()
