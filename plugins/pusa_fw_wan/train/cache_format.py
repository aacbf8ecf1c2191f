"""The on-disk form of the latent cache: one ``.safetensors`` per clip plus ``index.json``.

A clip file holds ``latents`` ``[C, F, H, W]`` and ``context`` ``[L, D]`` (the caption's real token rows, no
padding), both float32, and string metadata in its header (`CLIP_FORMAT`): source file and its SHA-256,
caption, clip number, source frame indices, fps, size, bucket, the codec and text-encoder identities,
the geometry and the settings fingerprint. ``index.json`` lists the clips the last run produced; the clip
headers are the ground truth, so a lost index costs nothing but a re-run of ``pusa-fw prepare``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pusa_fw.errors import CheckpointError
from pusa_fw.io.atomic import atomic_write_bytes

from pusa_fw_wan.weights import read_metadata, read_tensor_file, write_tensor_file

__all__ = [
    "EMPTY_CONTEXT_NAME",
    "read_empty_context",
    "write_empty_context",
    "CLIP_FORMAT",
    "INDEX_FORMAT",
    "INDEX_NAME",
    "read_clip",
    "read_clip_metadata",
    "read_index",
    "write_clip",
    "write_index",
]

CLIP_FORMAT = "pusa-fw-latent-cache"
INDEX_FORMAT = "pusa-fw-latent-cache-index"
INDEX_NAME = "index.json"
EMPTY_CONTEXT_NAME = "empty_context.safetensors"
"""The empty prompt's text embedding `[L, D]` (tensor ``context``), for caption dropout in training."""
FORMAT_VERSION = "1"


def write_clip(path: Path, latents: torch.Tensor, context: torch.Tensor, metadata: dict[str, Any]) -> None:
    """Write one clip atomically; non-string metadata values are stored as JSON."""
    header = {"format": CLIP_FORMAT, "version": FORMAT_VERSION}
    header.update(
        {key: value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}
    )
    tensors = {
        "latents": latents.detach().to(torch.float32).contiguous(),
        "context": context.detach().to(torch.float32).contiguous(),
    }
    write_tensor_file(path, tensors, metadata=header)


def read_clip_metadata(path: Path) -> dict[str, str] | None:
    """The header metadata of a clip file, or None when it is missing, unreadable or not a cache clip."""
    try:
        metadata = read_metadata(path)
    except CheckpointError:  # any failure means "not usable"
        return None
    return metadata if metadata.get("format") == CLIP_FORMAT else None


def read_clip(path: Path) -> tuple[torch.Tensor, torch.Tensor, dict[str, str]]:
    """``(latents, context, metadata)`` of a clip file.

    Raises:
        CheckpointError: the file is missing, unreadable, or not a cache clip.
    """
    try:
        tensors, metadata = read_tensor_file(path, what="cache clip")
    except CheckpointError as error:
        raise CheckpointError(f"{error}; re-run `pusa-fw prepare` on its dataset") from error
    if metadata.get("format") != CLIP_FORMAT or not {"latents", "context"} <= set(tensors):
        raise CheckpointError(
            f"{str(path)!r} is not a pusa-fw cache clip (format {metadata.get('format')!r}, "
            f"tensors {sorted(tensors)})"
        )
    return tensors["latents"], tensors["context"], metadata


def write_index(directory: Path, entries: list[dict[str, Any]], extra: dict[str, Any]) -> Path:
    """Write ``index.json`` atomically: the format, `extra` (codec, text encoder, ...) and the clips."""
    document = {"format": INDEX_FORMAT, "version": int(FORMAT_VERSION), **extra, "clips": entries}
    return atomic_write_bytes(directory / INDEX_NAME, json.dumps(document, indent=1).encode())


def read_index(directory: Path) -> dict[str, Any]:
    """The parsed ``index.json`` of a cache directory.

    Raises:
        CheckpointError: no index, or one that is not a pusa-fw cache index.
    """
    path = Path(directory).expanduser() / INDEX_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{str(path)!r} does not exist; run `pusa-fw prepare DATA --out {directory}` to build the cache"
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read {str(path)!r} ({error}); re-run `pusa-fw prepare`") from error
    if not isinstance(document, dict) or document.get("format") != INDEX_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a pusa-fw cache index; re-run `pusa-fw prepare`")
    return document


def write_empty_context(directory: Path, context: torch.Tensor) -> Path:
    """Cache the empty prompt's embedding `[L, D]` as ``<directory>/empty_context.safetensors`` (atomically)."""
    return write_tensor_file(directory / EMPTY_CONTEXT_NAME, {"context": context.float().contiguous()})


def read_empty_context(path: Path) -> torch.Tensor:
    """The embedding `write_empty_context` wrote, float32 `[L, D]`.

    Raises:
        CheckpointError: the file holds no 2-D ``context`` tensor.
    """
    tensors, _ = read_tensor_file(path, what="empty-prompt embedding")
    context = tensors.get("context")
    if context is None or context.ndim != 2:
        raise CheckpointError(f"{str(path)!r} holds no [L, D] 'context' tensor; it is not an empty-prompt embedding")
    return context.float()
