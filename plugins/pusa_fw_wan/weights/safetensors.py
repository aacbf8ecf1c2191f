"""Low-memory reading and streaming writing of ``.safetensors`` files.

The format: 8 bytes little-endian header length N, N bytes of JSON (``{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {...}}``), then the raw little-endian tensor bytes.
Tensors are read one at a time with ``readinto`` into a fresh tensor (no mmap, so the file's pages are not
counted in the process' resident memory), which keeps the peak of a checkpoint load at about one copy of
the weights. Writing streams one tensor at a time into a temp file that replaces the target atomically.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch

from pusa_fw.errors import CheckpointError
from pusa_fw.io.atomic import atomic_path
from pusa_fw.io.files import read_safetensors_header

__all__ = ["TensorInfo", "iter_tensors", "read_header", "read_metadata", "write_streaming"]

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_DTYPE_NAMES = {dtype: name for name, dtype in _DTYPES.items()}


class TensorInfo:
    """Where one tensor lives in a file: dtype, shape and absolute byte range."""

    __slots__ = ("begin", "dtype", "end", "shape")

    def __init__(self, dtype: torch.dtype, shape: tuple[int, ...], begin: int, end: int) -> None:
        self.dtype, self.shape, self.begin, self.end = dtype, shape, begin, end


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` header (``{}`` when there is none); reads only the header.

    Raises:
        CheckpointError: the file is missing or not a valid safetensors file.
    """
    header, _ = read_safetensors_header(path)
    metadata = header.get("__metadata__") or {}
    return {str(key): str(value) for key, value in metadata.items()}


def read_header(path: str | os.PathLike[str]) -> dict[str, TensorInfo]:
    """Tensor names, dtypes, shapes and byte ranges of a ``.safetensors`` file (reads only the header).

    Raises:
        CheckpointError: the file is missing or not a valid safetensors file.
    """
    path = Path(path)
    header, data_start = read_safetensors_header(path)
    infos: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(entry.get("dtype"))
        if dtype is None:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {entry.get('dtype')!r}")
        begin, end = entry["data_offsets"]
        infos[name] = TensorInfo(dtype, tuple(entry["shape"]), data_start + begin, data_start + end)
    return infos


def iter_tensors(
    path: str | os.PathLike[str], names: Iterable[str] | None = None, reuse_buffer: bool = False
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, tensor)`` for the tensors of a file, in file order, one fresh CPU tensor at a time.

    Args:
        path: the ``.safetensors`` file.
        names: restrict to these names (default: all).
        reuse_buffer: read every tensor into one scratch buffer (grown to the largest tensor) instead of a
            fresh one: each yielded tensor is valid only until the next is read, so a caller that keeps
            one must copy it. A loader that converts every tensor (to another dtype or device) then never
            frees a read buffer between its kept tensors, which keeps the heap unfragmented.
    """
    infos = read_header(path)
    wanted = set(infos) if names is None else set(names)
    ordered = sorted((info.begin, name) for name, info in infos.items() if name in wanted)
    scratch = torch.empty(0, dtype=torch.uint8)
    with Path(path).open("rb", buffering=0) as handle:
        for _, name in ordered:
            info = infos[name]
            nbytes = info.end - info.begin
            expected = math.prod(info.shape) * torch.empty((), dtype=info.dtype).element_size()
            if nbytes != expected:
                raise CheckpointError(
                    f"{path}: tensor {name!r} has {nbytes} bytes, its shape needs {expected}"
                )
            if reuse_buffer:
                if scratch.numel() < nbytes:
                    scratch = torch.empty(0, dtype=torch.uint8)  # free the old one before growing
                    scratch = torch.empty(nbytes, dtype=torch.uint8)
                buffer = scratch[:nbytes]
            else:
                buffer = torch.empty(nbytes, dtype=torch.uint8)
            handle.seek(info.begin)
            view = memoryview(buffer.numpy())
            read = 0
            while read < nbytes:
                count = handle.readinto(view[read:])
                if not count:
                    raise CheckpointError(f"{path} is truncated inside tensor {name!r}")
                read += count
            yield name, buffer.view(info.dtype).reshape(info.shape)


def write_streaming(
    path: str | os.PathLike[str],
    specs: dict[str, tuple[torch.dtype, tuple[int, ...]]],
    produce: Callable[[str], torch.Tensor],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write a ``.safetensors`` file one tensor at a time, atomically.

    Args:
        path: target file; written through `pusa_fw.io.atomic.atomic_path` (a temp file beside it, then
            renamed), so a failure leaves the target untouched.
        specs: ``name -> (dtype, shape)`` in file order.
        produce: called once per name, in order; must return a tensor of that dtype and shape.
        metadata: string metadata for the header (default ``{"format": "pt"}``).
    """
    path = Path(path)
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in specs.items():
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {
            "dtype": _DTYPE_NAMES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    with atomic_path(path) as temp_path, temp_path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(header_bytes)))
        handle.write(header_bytes)
        for name, (dtype, shape) in specs.items():
            tensor = produce(name)
            if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
                raise ValueError(
                    f"tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}, spec says {dtype} {shape}"
                )
            handle.write(memoryview(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()))
