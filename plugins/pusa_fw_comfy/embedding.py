"""Prompt embeddings written by pusa-fw, read back as ComfyUI text conditioning."""

from __future__ import annotations

from pathlib import Path

import torch

from pusa_fw.errors import InputError

__all__ = ["load_prompt_embedding"]


def load_prompt_embedding(path: str, pad_to: int) -> torch.Tensor:
    """`[1, max(n, pad_to), D]` float32: the file's ``embedding`` `[n, D]`, zero-padded like Wan's encoder.

    Args:
        path: a safetensors file with one tensor ``embedding`` `[n, D]` (pusa-fw's prompt cache entry).
        pad_to: token count to pad to with zeros (Wan pads every prompt to 512); 0 keeps n.

    Raises:
        InputError: a missing file, or no 2-D ``embedding`` tensor in it.
    """
    from safetensors import SafetensorError, safe_open

    file = Path(path.strip()).expanduser()
    if not path.strip() or not file.is_file():
        raise InputError(f"path {path!r} is not a file; give the .safetensors file of a pusa-fw prompt embedding")
    try:
        with safe_open(str(file), framework="pt") as handle:
            if "embedding" not in handle.keys():
                raise InputError(f"{str(file)!r} holds no tensor 'embedding' (it has {sorted(handle.keys())[:5]})")
            embedding = handle.get_tensor("embedding")
    except SafetensorError as error:
        raise InputError(f"{str(file)!r} is not a safetensors file ({error}); give a pusa-fw prompt embedding") from None
    if embedding.dim() != 2:
        raise InputError(f"'embedding' in {str(file)!r} must be [tokens, dim], got {list(embedding.shape)}")
    tokens = embedding.shape[0]
    padded = embedding.new_zeros(max(tokens, pad_to), embedding.shape[1])
    padded[:tokens] = embedding
    return padded.to(torch.float32).unsqueeze(0)
