"""Read a LoRA file into a flat tensor dict without pickle (safetensors, or `torch.load(weights_only=True)`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pusa_fw.errors import CheckpointError

__all__ = ["TORCH_SUFFIXES", "read_tensor_file"]

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def read_tensor_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a flat tensor dict without pickle.

    Args:
        path: a `.safetensors` file, or a `.pt` / `.pth` / `.bin` / `.ckpt` file read with
            `torch.load(weights_only=True)`.

    Returns:
        `(tensors, metadata)`; metadata is the safetensors header metadata ({} for torch files).
    """
    if not path.is_file():
        raise CheckpointError(f"LoRA file {str(path)!r} does not exist or is not a file; check the path")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                metadata = dict(handle.metadata() or {})
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        except Exception as error:  # safetensors raises its own error types
            raise CheckpointError(f"cannot read LoRA file {str(path)!r} as safetensors: {error}") from error
        return tensors, metadata
    if suffix in TORCH_SUFFIXES:
        try:
            loaded: Any = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as error:
            raise CheckpointError(
                f"cannot read LoRA file {str(path)!r} with torch.load(weights_only=True): {error}; "
                "only plain tensor dicts are accepted (convert the file to .safetensors)"
            ) from error
        if not isinstance(loaded, Mapping):
            raise CheckpointError(
                f"LoRA file {str(path)!r} holds a {type(loaded).__name__}, not a dict of tensors"
            )
        bad = [str(key) for key, value in loaded.items() if not isinstance(value, torch.Tensor)]
        if bad:
            raise CheckpointError(
                f"LoRA file {str(path)!r} has entries that are not tensors: {bad[:10]}; "
                "expected a flat {name: tensor} dict (the file may be a training checkpoint, not a LoRA)"
            )
        return {str(key): value for key, value in loaded.items()}, {}
    raise CheckpointError(
        f"LoRA file {str(path)!r} has suffix {suffix!r}; use .safetensors or one of {list(TORCH_SUFFIXES)}"
    )
