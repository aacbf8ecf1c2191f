"""Reading a row range of one tensor of a weight file, without reading the rest (shard-only loads).

A C-contiguous tensor's rows ``[start, stop)`` are one contiguous byte range of a ``.safetensors`` file, so
`read_rows` reads exactly those bytes (``safe_open``'s ``get_slice``, memory-mapped); a ``.pt``/``.bin``
state dict is memory-mapped (``weights_only=True``) and sliced. FSDP2 shards every parameter on dim 0, so a
rank reads its shard of each tensor this way (`pusa_fw_wan.parallel.shard_load`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["read_rows"]


def read_rows(path: str | os.PathLike[str], name: str, start: int, stop: int, *, what: str = "weight file"
              ) -> torch.Tensor:
    """Rows ``[start, stop)`` (dim 0) of tensor `name` of `path`, as a fresh CPU tensor (a 0-d tensor whole).

    Args:
        path: a ``.safetensors`` file, or a torch state-dict file.
        name: the tensor's key in the file.
        start: first row.
        stop: one past the last row (``start == stop`` gives an empty tensor of the right trailing shape).
        what: what the file is, for error messages of torch files.
    """
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as handle:
            view = handle.get_slice(name)
            if not view.get_shape():
                return handle.get_tensor(name)
            return view[start:stop]
    from pusa_fw_wan.weights.files import read_torch_file

    tensor = read_torch_file(path, what=what, mmap=True)[name]
    return tensor.clone() if tensor.ndim == 0 else tensor[start:stop].clone()
