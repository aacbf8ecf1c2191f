"""On-disk cache of prompt embeddings.

One safetensors file per (model, tokenizer, prompt, max length), named by the sha256 of those four, under
`<directory>/<first two hex digits>/<sha256>.safetensors`. A file holds one tensor `embedding`
`[n, d_model]`: the encoder output for the `n` real tokens of the prompt (the zero padding is not stored).
Files are written atomically, so concurrent runs sharing a cache never read a half-written entry.

The model and tokenizer enter the key as *identity strings* (see `file_identity`): path, size and
modification time of their files, plus whatever else changes the numbers (dtype, config overrides).
Replacing a checkpoint therefore changes the key; nothing has to be invalidated by hand.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from pusa_fw.errors import CheckpointError, InputError

from pusa_fw_wan.weights import read_tensor_file, write_tensor_file

__all__ = ["PromptCache", "default_prompt_cache_dir", "file_identity"]

_TENSOR_NAME = "embedding"
_FORMAT_VERSION = "pusa_fw.prompt_cache.v1"


def default_prompt_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/pusa_fw/prompts`, or `~/.cache/pusa_fw/prompts` when XDG_CACHE_HOME is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "pusa_fw" / "prompts"


def file_identity(path: str | os.PathLike[str], suffixes: tuple[str, ...] | None = None) -> str:
    """A string that changes when the file (or a directory's files) at `path` changes.

    Made of the resolved path, size and modification time (ns) of each file; contents are not hashed
    (an 11 GB checkpoint would take minutes).

    Args:
        path: a file, or a directory whose top-level files are all included.
        suffixes: for a directory, only files with these suffixes (e.g. `(".json", ".safetensors")`).
    """
    root = Path(path).expanduser().resolve()
    files = [root] if root.is_file() else sorted(item for item in root.iterdir() if item.is_file())
    if suffixes is not None and not root.is_file():
        files = [item for item in files if item.suffix in suffixes]
    entries = []
    for item in files:
        status = item.stat()
        entries.append(f"{item}:{status.st_size}:{status.st_mtime_ns}")
    return "|".join(entries)


class PromptCache:
    """Prompt embeddings stored on disk, keyed by model, tokenizer, prompt and maximum length.

    Args:
        directory: cache root; created on the first write.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).expanduser()

    @staticmethod
    def key(model_identity: str, tokenizer_identity: str, prompt: str, max_length: int) -> str:
        """The sha256 (hex) naming one entry."""
        payload = json.dumps(
            [_FORMAT_VERSION, model_identity, tokenizer_identity, prompt, int(max_length)], ensure_ascii=False
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def path_for(self, key: str) -> Path:
        """File of the entry `key`."""
        return self.directory / key[:2] / f"{key}.safetensors"

    def load(self, key: str) -> torch.Tensor | None:
        """The stored embedding `[n, d_model]` of `key`, or `None` when there is none.

        Raises:
            CheckpointError: the entry exists but cannot be read (delete the file to rebuild it).
        """
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            tensors, _ = read_tensor_file(path, what="prompt cache entry")
        except CheckpointError as error:
            raise CheckpointError(f"{error}; delete the entry and run again") from error
        embedding = tensors.get(_TENSOR_NAME)
        if embedding is None or embedding.ndim != 2:
            raise CheckpointError(
                f"prompt cache entry {str(path)!r} has no [n, d_model] tensor {_TENSOR_NAME!r}; delete it"
            )
        return embedding

    def store(self, key: str, embedding: torch.Tensor, *, prompt: str = "") -> Path:
        """Write the embedding `[n, d_model]` of `key` atomically and return its file."""
        if embedding.ndim != 2:
            raise InputError(f"embedding must be [n, d_model], got shape {tuple(embedding.shape)}")
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {"format": _FORMAT_VERSION, "prompt": prompt}
        return write_tensor_file(path, {_TENSOR_NAME: embedding}, metadata)
