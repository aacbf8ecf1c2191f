"""`ToyTextEncoder`: a frozen word-level text encoder with `WanTextEncoder.encode`'s interface.

A prompt is lower-cased and split into words (punctuation dropped); each word in the vocabulary becomes
its id, any other word ``<unk>``; ``</s>`` is appended and the ids are padded with ``<pad>`` to
`max_length`. The embedding of a token is a fixed random word vector plus a fixed random position
vector; rows past ``</s>`` are zero, as Wan's context is. Nothing is trained: the DiT's text projection
learns to read these vectors.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from pusa_fw.errors import CheckpointError, InputError
from pusa_fw.io.atomic import atomic_path

__all__ = ["TOY_WORDS", "ToyTextEncoder", "ToyTextModel", "tokenize_words"]

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
TOY_WORDS: tuple[str, ...] = (
    "a", "the", "square", "red", "green", "blue", "moving", "moves", "right", "left", "up", "down",
    "white", "black", "nose", "shape", "small", "slow", "fast", "static",
)
"""The vocabulary after the special tokens (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2)."""
_WORD = re.compile(r"[a-z0-9]+")


def tokenize_words(prompt: str, vocab: dict[str, int], max_length: int) -> tuple[list[int], int]:
    """Token ids of `prompt` padded to `max_length` (``</s>`` appended, truncated like umT5) and the count of
    real tokens (``</s>`` included)."""
    ids = [vocab.get(word, vocab["<unk>"]) for word in _WORD.findall(prompt.lower())]
    ids = ids[: max_length - 1] + [vocab["</s>"]]
    return ids + [vocab["<pad>"]] * (max_length - len(ids)), len(ids)


class ToyTextModel(nn.Module):
    """Word and position tables: `[V, D]` and `[L, D]` (frozen)."""

    def __init__(self, vocab_size: int, dim: int, max_length: int) -> None:
        super().__init__()
        self.words = nn.Embedding(vocab_size, dim)
        self.positions = nn.Parameter(torch.zeros(max_length, dim))
        self.requires_grad_(False)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """`[B, L]` ids and `[B]` real lengths -> `[B, L, D]` embeddings (zeros past each length)."""
        embedded = self.words(ids) + self.positions[None, : ids.shape[1]]
        keep = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]
        return embedded * keep[..., None].to(embedded.dtype)


class ToyTextEncoder:
    """Prompts -> `[B, max_length, dim]` contexts for a toy DiT (``text_len = max_length``).

    Args:
        model: the `ToyTextModel`.
        words: the vocabulary after the special tokens.
    """

    def __init__(self, model: ToyTextModel, words: Sequence[str]) -> None:
        self.model = model
        self.words = tuple(words)
        self.vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + self.words)}
        if len(self.vocab) != model.words.num_embeddings:
            raise CheckpointError(
                f"the toy text encoder has {model.words.num_embeddings} word vectors for {len(self.vocab)} tokens; "
                "rebuild it with the same vocabulary"
            )

    @classmethod
    def random(cls, *, dim: int = 32, max_length: int = 8, seed: int = 0,
               words: Sequence[str] = TOY_WORDS) -> ToyTextEncoder:
        """A new encoder with N(0, 1) word and 0.5 N(0, 1) position vectors drawn from `seed`."""
        if dim < 1 or max_length < 2:
            raise InputError(f"dim={dim} must be >= 1 and max_length={max_length} >= 2 (a word and </s>)")
        generator = torch.Generator().manual_seed(seed)
        model = ToyTextModel(len(SPECIAL_TOKENS) + len(words), dim, max_length)
        with torch.no_grad():
            model.words.weight.copy_(torch.randn(model.words.weight.shape, generator=generator))
            model.positions.copy_(0.5 * torch.randn(model.positions.shape, generator=generator))
        return cls(model, words)

    @property
    def d_model(self) -> int:
        """Width of the embeddings."""
        return int(self.model.words.embedding_dim)

    @property
    def max_length(self) -> int:
        """Rows per context (the DiT's ``text_len``)."""
        return int(self.model.positions.shape[0])

    @property
    def device(self) -> torch.device:
        return self.model.words.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.words.weight.dtype

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """`input_ids` `[B, max_length]` int64 and `attention_mask` `[B, max_length]` int64 (1 = real token)."""
        rows = [tokenize_words(prompt, self.vocab, self.max_length) for prompt in prompts]
        ids = torch.tensor([row for row, _ in rows], dtype=torch.int64)
        lengths = torch.tensor([length for _, length in rows], dtype=torch.int64)
        mask = (torch.arange(self.max_length)[None, :] < lengths[:, None]).to(torch.int64)
        return ids, mask

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """Embed prompts: `[B, max_length, d_model]` float32 on the encoder's device."""
        if isinstance(prompts, str):
            raise InputError("encode takes a list of prompts; wrap a single prompt in a list")
        ids, mask = self.tokenize(prompts)
        return self.model(ids.to(self.device), mask.sum(dim=1).to(self.device)).float()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the tables and the vocabulary to a ``.safetensors`` file, atomically."""
        target = Path(path)
        tensors = {"words": self.model.words.weight.detach().cpu().contiguous(),
                   "positions": self.model.positions.detach().cpu().contiguous()}
        with atomic_path(target) as temp:
            save_file(tensors, str(temp), metadata={"format": "pusa-fw-toy-text", "words": json.dumps(self.words)})
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: torch.device | str = "cpu") -> ToyTextEncoder:
        """Read a file written by `save`.

        Raises:
            CheckpointError: the file is missing or not a toy text encoder.
        """
        source = Path(path)
        if not source.is_file():
            raise CheckpointError(f"toy text encoder {str(source)!r} does not exist; check the model directory")
        try:
            with safe_open(str(source), framework="pt") as handle:
                metadata = handle.metadata() or {}
                words_table, positions = handle.get_tensor("words"), handle.get_tensor("positions")
            words = json.loads(metadata["words"])
        except (OSError, KeyError, ValueError, RuntimeError, SafetensorError) as error:
            raise CheckpointError(f"{str(source)!r} is not a toy text encoder ({error}); rebuild the toy model") from error
        model = ToyTextModel(words_table.shape[0], words_table.shape[1], positions.shape[0])
        with torch.no_grad():
            model.words.weight.copy_(words_table)
            model.positions.copy_(positions)
        return cls(model.to(device), words)
