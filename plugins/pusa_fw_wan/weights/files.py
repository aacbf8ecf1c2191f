"""The one reader (and atomic writer) of weight files: safetensors, .pt/.pth/.bin/.ckpt, shard indexes.

Every loader of the Wan plugin (DiT, VAE, umT5, LoRA) reads its files through this module, so the suffixes
that count as weights, the refusal of pickle (`torch.load(weights_only=True)`), the unwrapping of a
``{"state_dict": {...}}`` wrapper and the error messages are the same everywhere.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from pusa_fw.errors import CheckpointError
from pusa_fw.io.atomic import atomic_path

from pusa_fw_wan.weights.safetensors import iter_tensors, read_header

__all__ = [
    "CHECKPOINT_FILE_SUFFIXES",
    "INDEX_SUFFIX",
    "SAFETENSORS_SUFFIX",
    "TORCH_SUFFIXES",
    "WEIGHT_SUFFIXES",
    "iter_file_tensors",
    "read_shapes",
    "read_tensor_file",
    "read_torch_file",
    "shard_files",
    "write_tensor_file",
]

SAFETENSORS_SUFFIX = ".safetensors"
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
WEIGHT_SUFFIXES = (SAFETENSORS_SUFFIX, *TORCH_SUFFIXES)
INDEX_SUFFIX = ".index.json"
# Files that make up a checkpoint directory (weights, configs, tokenizer models): what identifies it.
CHECKPOINT_FILE_SUFFIXES = (*WEIGHT_SUFFIXES, ".json", ".model")
# Single-entry wrappers that training scripts put around a state dict.
_WRAPPER_KEYS = ("state_dict", "model_state")
_MAX_LISTED = 10


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _is_index(path: Path) -> bool:
    return path.name.lower().endswith(INDEX_SUFFIX)


def _check_suffix(path: Path, what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES and not _is_index(path):
        raise CheckpointError(
            f"{what} {str(path)!r} has an unknown extension {suffix!r}; use one of "
            f"{list(WEIGHT_SUFFIXES)} or a shard index (*{INDEX_SUFFIX})"
        )
    return suffix


def read_torch_file(path: Path, *, what: str = "checkpoint", mmap: bool = False) -> dict[str, torch.Tensor]:
    """Read a pickled state dict without pickle: `torch.load(weights_only=True)`, then check it is flat.

    Args:
        path: a `.pt` / `.pth` / `.bin` / `.ckpt` file.
        what: what the file is, for error messages ("VAE checkpoint", "LoRA file").
        mmap: memory-map the file (zip format only; legacy files fall back to a plain read).

    Returns:
        ``{name: tensor}`` on the CPU; a ``state_dict`` / ``model_state`` wrapper is removed.

    Raises:
        CheckpointError: the file needs pickle, is unreadable, or is not a flat dict of tensors.
    """
    try:
        try:
            loaded: Any = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError:
            if not mmap:
                raise
            loaded = torch.load(str(path), map_location="cpu", weights_only=True)  # legacy: no mmap
    except Exception as error:  # UnpicklingError, RuntimeError, EOFError, zip errors, ...
        raise CheckpointError(
            f"cannot read {what} {str(path)!r} with torch.load(weights_only=True), i.e. without pickle "
            f"({_first_line(error)}); re-save it as .safetensors or as a plain state dict of tensors"
        ) from error
    if isinstance(loaded, Mapping):
        for wrapper in _WRAPPER_KEYS:
            if isinstance(loaded.get(wrapper), Mapping):  # {"state_dict": {...}, "epoch": 3, ...}
                loaded = loaded[wrapper]
                break
    if not isinstance(loaded, Mapping):
        raise CheckpointError(
            f"{what} {str(path)!r} holds a {type(loaded).__name__}, not a dict of tensors; "
            "save model.state_dict() (or convert the file to .safetensors)"
        )
    bad = [str(key) for key, value in loaded.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{what} {str(path)!r} has entries that are not tensors: {bad[:_MAX_LISTED]}; expected a flat "
            "{name: tensor} state dict (the file may be a training checkpoint: save model.state_dict())"
        )
    return {str(key): value for key, value in loaded.items()}


def shard_files(index_file: Path) -> list[Path]:
    """The shard files named by a ``*.safetensors.index.json`` (``{"weight_map": {key: shard}}``), in order.

    Raises:
        CheckpointError: the index is not valid JSON / has no weight_map, or a shard is missing.
    """
    try:
        weight_map = json.loads(index_file.read_text())["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{index_file} is not a valid shard index: {_first_line(error)}") from error
    absent = [name for name in names if not (index_file.parent / name).is_file()]
    if absent:
        raise CheckpointError(f"{index_file} lists shards that are missing: {absent}")
    return [index_file.parent / name for name in names]


def _read_safetensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as error:  # safetensors raises its own error types
        raise CheckpointError(
            f"cannot read {what} {str(path)!r} as safetensors ({_first_line(error)})"
        ) from error
    return tensors, metadata


def read_tensor_file(
    path: str | os.PathLike[str], *, what: str = "checkpoint"
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a weight file into a flat tensor dict without pickle.

    Args:
        path: a `.safetensors` file, a `.pt` / `.pth` / `.bin` / `.ckpt` file (read with
            `torch.load(weights_only=True, mmap=True)`), or a shard index ``*.safetensors.index.json``
            (all its shards).
        what: what the file is, for error messages.

    Returns:
        `(tensors, metadata)`; metadata is the safetensors header metadata (of the first shard; {} for
        torch files).

    Raises:
        CheckpointError: the file is missing, has an unknown extension, or cannot be read as tensors.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{what} {str(path)!r} does not exist or is not a file; check the path")
    suffix = _check_suffix(path, what)
    if _is_index(path):
        tensors: dict[str, torch.Tensor] = {}
        metadata: dict[str, str] = {}
        for shard in shard_files(path):
            shard_tensors, shard_metadata = read_tensor_file(shard, what=what)
            metadata = metadata or shard_metadata
            tensors.update(shard_tensors)
        return tensors, metadata
    if suffix == SAFETENSORS_SUFFIX:
        return _read_safetensors(path, what)
    return read_torch_file(path, what=what, mmap=True), {}


def read_shapes(files: list[Path], *, what: str = "checkpoint") -> dict[str, tuple[tuple[int, ...], Path]]:
    """Key -> (shape, file) over several files, from safetensors headers without reading the tensors.

    Torch files have no header: they are loaded (memory-mapped where possible) to read their shapes.

    Raises:
        CheckpointError: unreadable files, or a key present in two files.
    """
    shapes: dict[str, tuple[tuple[int, ...], Path]] = {}
    for file in files:
        _check_suffix(file, what)
        if file.suffix.lower() == SAFETENSORS_SUFFIX:
            found = {name: info.shape for name, info in read_header(file).items()}
        else:
            found = {name: tuple(t.shape) for name, t in read_torch_file(file, what=what, mmap=True).items()}
        for name, shape in found.items():
            if name in shapes:
                raise CheckpointError(
                    f"tensor {name!r} appears in both {shapes[name][1].name} and {file.name}"
                )
            shapes[name] = (shape, file)
    return shapes


def iter_file_tensors(
    file: Path, *, what: str = "checkpoint", names: Iterable[str] | None = None, reuse_buffer: bool = False
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, tensor)`` of one weight file, one tensor at a time (safetensors are streamed).

    Args:
        file: the weight file.
        what: what the file is, for error messages.
        names: only these tensors (default: all).
        reuse_buffer: safetensors only: read into one scratch buffer, so a tensor is valid only until the
            next one is read (see `pusa_fw_wan.weights.safetensors.iter_tensors`).
    """
    if file.suffix.lower() == SAFETENSORS_SUFFIX:
        yield from iter_tensors(file, names, reuse_buffer=reuse_buffer)
        return
    state = read_torch_file(file, what=what, mmap=True)
    wanted = None if names is None else set(names)
    for name in list(state):
        tensor = state.pop(name)
        if wanted is None or name in wanted:
            yield name, tensor


def write_tensor_file(
    path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """Write ``{name: tensor}`` as a `.safetensors` file atomically (through `pusa_fw.io.atomic`).

    Args:
        path: the target file; its directory must exist.
        tensors: the tensors (made contiguous on the CPU before writing).
        metadata: string metadata for the header.

    Returns:
        The written path.
    """
    from safetensors.torch import save_file

    target = Path(path).expanduser()
    with atomic_path(target) as temp_path:
        save_file(
            {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()},
            str(temp_path),
            metadata=metadata,
        )
    return target
