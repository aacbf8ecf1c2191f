"""`LatentCache`: the cache written by ``pusa-fw prepare``, read back as a `TrainingSource`.

The order of samples is the order of ``index.json`` (manifest order, clips of a video in time order).
Contexts are stored without padding rows and zero-padded to ``context_length`` (the text encoder's length,
512 for umT5) when loaded, so every sample's context has the same shape and a bucket is just the latents
shape: clips of the same size and frame count may share a batch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pusa_fw.errors import CheckpointError, InputError
from pusa_fw.training_data import TrainingSample
from pusa_fw_wan.train.cache_format import EMPTY_CONTEXT_NAME, read_clip, read_empty_context, read_index

__all__ = ["LatentCache"]


class LatentCache:
    """A `TrainingSource` over a prepared cache directory.

    Args:
        directory: the ``--out`` folder of ``pusa-fw prepare``.
        context_length: rows each context is zero-padded to; default the index's (the encoder's length).
        expect_codec: if given, the codec identity the cache must have been made with (a cache made with
            another VAE is refused instead of training on mismatched latents).

    Raises:
        CheckpointError: no index, an empty one, or one made with another codec.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        context_length: int | None = None,
        expect_codec: str | None = None,
    ) -> None:
        self.directory = Path(directory).expanduser()
        document = read_index(self.directory)
        self.entries: list[dict[str, Any]] = list(document.get("clips", []))
        if not self.entries:
            raise CheckpointError(
                f"cache {str(self.directory)!r} lists no clips; check the `pusa-fw prepare` summary.json"
            )
        self.codec = str(document.get("codec", ""))
        self.text_encoder = str(document.get("text_encoder", ""))
        if expect_codec is not None and expect_codec != self.codec:
            raise CheckpointError(
                f"cache {str(self.directory)!r} was encoded with codec {self.codec!r}, not {expect_codec!r}; "
                "re-run `pusa-fw prepare` with this model"
            )
        longest = max(int(entry["context_shape"][0]) for entry in self.entries)
        self.context_length = int(context_length or document.get("context_length") or longest)
        if self.context_length < longest:
            raise InputError(
                f"context_length={self.context_length} is shorter than the longest cached caption ({longest} "
                "tokens); pass a larger context_length or None"
            )

    def __len__(self) -> int:
        return len(self.entries)

    def _entry(self, index: int) -> dict[str, Any]:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self.entries):
            raise InputError(f"index {index!r} is outside [0, {len(self.entries)}) of cache {self.directory}")
        return self.entries[index]

    def bucket(self, index: int) -> tuple[int, ...]:
        """``(C, F, H, W, context_length, D)``: samples with equal buckets stack into one batch."""
        entry = self._entry(index)
        return (
            *(int(size) for size in entry["latents_shape"]),
            self.context_length,
            int(entry["context_shape"][1]),
        )

    def empty_context(self) -> torch.Tensor:
        """The empty prompt's embedding `[context_length, D]` that ``pusa-fw prepare`` cached (caption dropout).

        Raises:
            CheckpointError: a cache made before prepare wrote it (run ``pusa-fw prepare`` again).
        """
        path = self.directory / EMPTY_CONTEXT_NAME
        if not path.is_file():
            raise CheckpointError(
                f"cache {str(self.directory)!r} has no {EMPTY_CONTEXT_NAME} (caption dropout needs the empty "
                "prompt's embedding); run pusa-fw prepare on it again, or set data.empty_context"
            )
        context = read_empty_context(path)
        return F.pad(context, (0, 0, 0, max(self.context_length - context.shape[0], 0)))

    def load(self, index: int) -> TrainingSample:
        """The cached clip at `index`: float32 latents ``[C, F, H, W]`` and padded context ``[L, D]``.

        Raises:
            CheckpointError: the clip file is missing, unreadable, or no longer matches the index.
        """
        entry = self._entry(index)
        path = self.directory / entry["file"]
        latents, context, metadata = read_clip(path)
        if list(latents.shape) != list(entry["latents_shape"]) or list(context.shape) != list(
            entry["context_shape"]
        ):
            raise CheckpointError(
                f"cache clip {str(path)!r} holds latents {list(latents.shape)} / context "
                f"{list(context.shape)} but "
                f"the index says {entry['latents_shape']} / {entry['context_shape']}; "
                "re-run `pusa-fw prepare`"
            )
        padded = F.pad(context.to(torch.float32), (0, 0, 0, self.context_length - context.shape[0]))
        meta = {key: value for key, value in metadata.items() if key not in ("format", "version", "caption")}
        meta["file"] = entry["file"]
        return TrainingSample(
            latents=latents.to(torch.float32), context=padded, caption=metadata["caption"], meta=meta
        )
