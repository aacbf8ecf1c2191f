"""Prompt embeddings written by pusa-fw, read back as ComfyUI text conditioning.

The files live in ComfyUI's model folder ``models/pusa_embeddings`` (registered with ComfyUI's
``folder_paths`` as ``pusa_embeddings``, so ``extra_model_paths.yaml`` can add more folders). The Pusa
Prompt Embedding node offers them as a list and reads nothing else: a value that is not one of the listed
names is refused before any file is touched, without saying what the folder holds. ComfyUI does not check a
list value queued through ``/prompt``, and a server started with ``--listen`` takes workflows from anyone who
can reach it, so a free path here would let them probe the server's disk.
"""

from __future__ import annotations

import os

import torch

from pusa_fw.errors import InputError

__all__ = ["EMBEDDING_FOLDER", "embedding_names", "load_prompt_embedding", "register_embedding_folder"]

EMBEDDING_FOLDER = "pusa_embeddings"
"""ComfyUI ``folder_paths`` name of the prompt-embedding folder (``models/pusa_embeddings`` by default)."""


def register_embedding_folder() -> None:
    """Register ``models/pusa_embeddings`` (``.safetensors`` files) unless ComfyUI already knows the name."""
    import folder_paths

    if EMBEDDING_FOLDER not in folder_paths.folder_names_and_paths:
        default = os.path.join(folder_paths.models_dir, EMBEDDING_FOLDER)
        folder_paths.folder_names_and_paths[EMBEDDING_FOLDER] = ([default], {".safetensors"})


def embedding_names() -> list[str]:
    """The embedding files ComfyUI lists in its ``pusa_embeddings`` folders (names relative to a folder)."""
    import folder_paths

    register_embedding_folder()
    return list(folder_paths.get_filename_list(EMBEDDING_FOLDER))


def _resolve(name: str) -> str:
    import folder_paths

    path = folder_paths.get_full_path(EMBEDDING_FOLDER, name) if name in embedding_names() else None
    if path is None:
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise InputError(
            f"embedding {shown!r} is not a file listed in ComfyUI's models/{EMBEDDING_FOLDER} folder; copy the "
            "pusa-fw prompt embedding (.safetensors) there and pick it from the list"
        )
    return path


def load_prompt_embedding(name: str, pad_to: int) -> torch.Tensor:
    """`[1, max(n, pad_to), D]` float32: the file's ``embedding`` `[n, D]`, zero-padded like Wan's encoder.

    Args:
        name: a file listed in ComfyUI's ``pusa_embeddings`` folder: a safetensors file with one tensor
            ``embedding`` `[n, D]` (a pusa-fw prompt cache entry).
        pad_to: token count to pad to with zeros (Wan pads every prompt to 512); 0 keeps n.

    Raises:
        InputError: a name that is not listed there, or a file without a 2-D ``embedding`` tensor.
    """
    from safetensors import SafetensorError, safe_open

    path = _resolve(name)
    try:
        with safe_open(path, framework="pt") as handle:
            if "embedding" not in handle.keys():
                raise InputError(f"{name!r} holds no tensor 'embedding'; give a pusa-fw prompt embedding")
            embedding = handle.get_tensor("embedding")
    except SafetensorError as error:
        raise InputError(f"{name!r} is not a safetensors file ({error}); give a pusa-fw prompt embedding") from None
    if embedding.dim() != 2:
        raise InputError(f"'embedding' in {name!r} must be [tokens, dim], got {list(embedding.shape)}")
    tokens = embedding.shape[0]
    padded = embedding.new_zeros(max(tokens, pad_to), embedding.shape[1])
    padded[:tokens] = embedding
    return padded.to(torch.float32).unsqueeze(0)
