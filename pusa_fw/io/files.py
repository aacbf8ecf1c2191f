"""Facts about files on disk, read without loading them: a file's SHA-256, a ``.safetensors`` header.

The ``.safetensors`` layout: 8 bytes little-endian header length N, N bytes of JSON (``{name: {"dtype",
"shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``), then the raw tensor bytes. Only the
header is read here (no torch needed); loaders that stream the tensors build on `read_safetensors_header`.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

from pusa_fw.errors import CheckpointError

__all__ = ["file_sha256", "read_safetensors_header", "tensor_shapes"]

_CHUNK_BYTES = 8 * 1024 * 1024
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 8 MiB chunks (never the whole file at once).

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with Path(path).expanduser().open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def read_safetensors_header(path: str | os.PathLike[str]) -> tuple[dict[str, Any], int]:
    """The parsed JSON header of a ``.safetensors`` file and the byte offset where its tensor data starts.

    Raises:
        CheckpointError: the file is missing, unreadable or not a safetensors file (names the file).
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            size_bytes = handle.read(8)
            if len(size_bytes) != 8:
                raise CheckpointError(f"{path} is not a safetensors file (shorter than 8 bytes)")
            (header_size,) = struct.unpack("<Q", size_bytes)
            if header_size > _MAX_HEADER_BYTES:
                raise CheckpointError(f"{path} is not a safetensors file (header size {header_size})")
            header = json.loads(handle.read(header_size))
    except OSError as error:
        raise CheckpointError(f"cannot read checkpoint file {path}: {error}") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not a safetensors file (bad JSON header): {error}") from error
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors file (its header is not a JSON object)")
    return header, 8 + header_size


def tensor_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a ``.safetensors`` file, read from its header alone.

    Raises:
        CheckpointError: the file is missing or not a valid safetensors file, or an entry has no shape.
    """
    header, _ = read_safetensors_header(path)
    shapes = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(isinstance(size, int) for size in shape):
            raise CheckpointError(f"{path}: tensor {name!r} has no valid shape in the header ({shape!r})")
        shapes[name] = tuple(shape)
    return shapes
