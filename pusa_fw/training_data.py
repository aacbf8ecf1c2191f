"""The training data contract: what a trainer reads, whoever produced it (core, beside `fafm` and `ptss`).

A `TrainingSource` is an indexable collection of `TrainingSample`s (cached VAE latents plus a text
embedding). The trainer owns the sample order: it draws a seeded permutation per epoch, groups indices
with equal `bucket(index)` into batches, shards them per rank and saves its position in checkpoints. A
source only has to answer `len`, `bucket` and `load`, and `load(index)` must return the same sample every
time for the same index (so a resumed run sees the same data).

Implementations: the latent cache written by `pusa-fw prepare` (Wan plugin), a synthetic world for toy
runs (toy plugin), and `InMemorySource` below for tests. Plugins register source factories through the
``register_training_sources`` hook; the trainer (``pusa_fw_train``) reads only this contract.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from .errors import InputError

__all__ = ["InMemorySource", "TrainingSample", "TrainingSource", "pad_contexts"]


@dataclass
class TrainingSample:
    """One training clip, ready for the backbone.

    Attributes:
        latents: `[C, F, H, W]` float32 clean VAE latents (F latent frames).
        context: `[L, D]` float32 text embedding of the caption (L tokens, D = text dim).
        caption: the caption text (for logs and validation renders).
        meta: free-form facts about the sample (source file, frame indices, fps, ...).
    """

    latents: torch.Tensor
    context: torch.Tensor
    caption: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def pad_contexts(contexts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack text contexts `[L_i, D]` of one batch, zero-padded to the longest: `[B, max(L_i), D]` float32."""
    length = max(context.shape[0] for context in contexts)
    return torch.stack(
        [torch.nn.functional.pad(context.float(), (0, 0, 0, length - context.shape[0])) for context in contexts]
    )


@runtime_checkable
class TrainingSource(Protocol):
    """What the trainer needs from a data set of cached samples."""

    def __len__(self) -> int:
        """Number of samples."""
        ...

    def bucket(self, index: int) -> tuple:
        """A hashable key; samples with equal keys may share a batch (at least the latents shape)."""
        ...

    def load(self, index: int) -> TrainingSample:
        """The sample at `index` in [0, len); deterministic for a given index."""
        ...


class InMemorySource:
    """A `TrainingSource` over samples held in memory (tests, notebooks, tiny experiments).

    The bucket of a sample is `(C, F, H, W, L, D)`: its latents shape plus its context shape, so that a
    batch can always be stacked.

    Args:
        samples: the samples, in index order.
    """

    def __init__(self, samples: Sequence[TrainingSample]) -> None:
        if len(samples) == 0:
            raise InputError("InMemorySource needs at least one sample; pass a non-empty list.")
        for position, sample in enumerate(samples):
            if not isinstance(sample, TrainingSample):
                raise InputError(
                    f"samples[{position}] is a {type(sample).__name__}, expected a TrainingSample."
                )
            if sample.latents.ndim != 4 or sample.context.ndim != 2:
                raise InputError(
                    f"samples[{position}] has latents {tuple(sample.latents.shape)} and context "
                    f"{tuple(sample.context.shape)}; expected [C, F, H, W] and [L, D]."
                )
        self._samples = list(samples)

    @classmethod
    def random(
        cls,
        count: int,
        latent_shape: tuple[int, int, int, int],
        context_shape: tuple[int, int],
        *,
        seed: int = 0,
    ) -> InMemorySource:
        """`count` samples of standard-normal latents and contexts, reproducible from `seed`.

        Args:
            count: number of samples.
            latent_shape: `(C, F, H, W)` of every sample.
            context_shape: `(L, D)` of every sample.
            seed: seed of the CPU generator that draws them.
        """
        generator = torch.Generator().manual_seed(seed)
        samples = [
            TrainingSample(
                latents=torch.randn(latent_shape, generator=generator),
                context=torch.randn(context_shape, generator=generator),
                caption=f"random sample {index}",
                meta={"index": index},
            )
            for index in range(count)
        ]
        return cls(samples)

    def __len__(self) -> int:
        return len(self._samples)

    def _check_index(self, index: int) -> None:
        if not 0 <= index < len(self._samples):
            raise InputError(f"index {index} is outside [0, {len(self._samples)}).")

    def bucket(self, index: int) -> tuple[Hashable, ...]:
        self._check_index(index)
        sample = self._samples[index]
        return (*sample.latents.shape, *sample.context.shape)

    def load(self, index: int) -> TrainingSample:
        self._check_index(index)
        return self._samples[index]
