"""Loading a Wan2.1 T2V DiT checkpoint into `WanDiT` with about one copy of the weights in memory.

Accepted layouts (detected from the files and the key names):

- official directory: ``config.json`` + ``diffusion_pytorch_model.safetensors``, or shards listed in
  ``diffusion_pytorch_model.safetensors.index.json``;
- diffusers: a pipeline directory with ``transformer/``, or the ``transformer/`` directory itself
  (``WanTransformer3DModel`` names, mapped to the official ones);
- a single ``.safetensors`` file (keys optionally prefixed ``model.diffusion_model.`` or
  ``diffusion_model.``), in fp32, bf16, fp16 or fp8 (with or without the ``scale_weight`` tensors of
  "scaled fp8" files), or a ``.pt``/``.pth``/``.bin`` state dict (loaded with ``weights_only=True``).

The model is built on the meta device; every key is checked against the headers before any weight is read
(a `CheckpointError` lists missing, unexpected and mis-shaped keys); then the tensors are read one at a time,
cast and moved to their device, and assigned as parameters.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from pusa_fw.errors import CheckpointError

from pusa_fw_wan.dit.checkpoint_source import (
    _WEIGHTS_NAME,  # noqa: F401 (pusa_fw_wan.hooks imports it from here)
    _WHAT,
    CheckpointFiles,
    WanDiTSource,
    dequantized,
    find_checkpoint_files,
    open_wan_dit,
    read_wan_config,
)
from pusa_fw_wan.dit.config import WanConfig
from pusa_fw_wan.dit.model import WanDiT
from pusa_fw_wan.dit.storage import LowPrecisionLinear
from pusa_fw_wan.weights import format_key_list, iter_file_tensors

__all__ = [
    "CheckpointFiles",
    "WanDiTSource",
    "find_checkpoint_files",
    "load_wan_dit",
    "open_wan_dit",
    "read_wan_config",
]

def _assign(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_path, _, attribute = name.rpartition(".")
    module = model.get_submodule(module_path) if module_path else model
    old = module._parameters[attribute]
    module._parameters[attribute] = nn.Parameter(
        tensor, requires_grad=old.requires_grad if old is not None else True
    )


def _owned(converted: torch.Tensor, read: torch.Tensor) -> torch.Tensor:
    """`converted`, copied out of the scratch read buffer when the conversion kept its memory."""
    if converted.device == read.device and converted.untyped_storage().data_ptr() == (
        read.untyped_storage().data_ptr()
    ):
        return converted.clone()
    return converted


def load_wan_dit(
    path: str | os.PathLike[str],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    config: WanConfig | None = None,
    weights_dtype: str | torch.dtype | None = None,
) -> WanDiT:
    """Load a Wan2.1 T2V DiT checkpoint (see the module docstring for the layouts).

    Files in bf16, fp16 or fp8 (``float8_e4m3fn`` / ``float8_e5m2``, optionally with the per-layer
    ``scale_weight`` tensors of "scaled fp8" files and their ``scale_input`` / ``scaled_fp8`` entries,
    which are not needed and dropped) load the same way. Each tensor is read, converted to its target
    dtype on `device` and assigned before the next one is read, so no full-precision copy of the model
    ever exists. (Under FSDP2, `pusa_fw_wan.parallel.shard_load` fills only a rank's shards instead.)

    Args:
        path: directory or weight file.
        dtype: compute dtype; the large linears compute in it, and the embeddings are stored in it;
            `FP32_PARAMETER_PATTERNS` stay float32.
        device: target device of the weights.
        config: overrides ``config.json`` / shape inference.
        weights_dtype: storage dtype of the large linears (`pusa_fw_wan.dit.storage.WEIGHTS_DTYPES`);
            None or ``"auto"``: the file's own dtype when the large linears are stored in fp8, else `dtype`.

    Returns:
        The model in eval mode.

    Raises:
        CheckpointError: unreadable files, unknown layout, or keys that do not fit (all listed).
        InputError: an unknown `weights_dtype`.
    """
    model, source = open_wan_dit(path, dtype=dtype, config=config, weights_dtype=weights_dtype)
    device = torch.device(device)
    scales = source.read_scales()
    for file in source.files.weight_files:
        # One scratch read buffer: whatever is kept is converted or copied out of it (`_owned`).
        for raw_key, tensor in iter_file_tensors(file, what=_WHAT, names=source.file_keys(file),
                                                 reuse_buffer=True):
            name = source.weight_names[raw_key]
            module_path, _, attribute = name.rpartition(".")
            scale_key = source.scale_keys.get(module_path) if attribute == "weight" else None
            scale = scales.get(scale_key) if scale_key is not None else None
            module = model.get_submodule(module_path) if module_path else model
            if isinstance(module, LowPrecisionLinear) and attribute == "weight":
                module.set_weight(tensor.to(device), scale)
                module.weight = nn.Parameter(_owned(module.weight.data, tensor), requires_grad=False)
            else:
                target = source.target_dtype(name)
                _assign(model, name, _owned(dequantized(tensor.to(device), scale, target), tensor))
            del tensor
    still_meta = [name for name, parameter in model.named_parameters() if parameter.is_meta]
    still_meta += [name for name, buffer in model.named_buffers() if buffer.is_meta]
    if still_meta:
        raise CheckpointError(f"checkpoint {path} left parameters unfilled: {format_key_list(still_meta)}")
    return model.eval()
