"""A Wan DiT checkpoint before any weight is read: its files, key layout, fp8 scales and storage dtype
(`open_wan_dit`), and its architecture (`read_wan_config`). `pusa_fw_wan.dit.checkpoint` loads the whole model
from it; `pusa_fw_wan.parallel.shard_load` fills only a rank's FSDP2 shards.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pusa_fw.errors import CheckpointError

from pusa_fw_wan.dit.config import WanConfig
from pusa_fw_wan.dit.model import WanDiT, _keeps_fp32
from pusa_fw_wan.dit.key_mapping import diffusers_to_official, infer_config, is_diffusers_naming, strip_prefix
from pusa_fw_wan.dit.storage import FP8_DTYPES, is_large_linear, parse_weights_dtype, set_weights_dtype
from pusa_fw_wan.weights import (
    INDEX_SUFFIX,
    compare_keys,
    format_key_list,
    iter_file_tensors,
    read_shapes,
    shard_files,
)
from pusa_fw_wan.weights.files import read_torch_file
from pusa_fw_wan.weights.safetensors import read_header

__all__ = [
    "CheckpointFiles",
    "WanDiTSource",
    "dequantized",
    "find_checkpoint_files",
    "open_wan_dit",
    "read_wan_config",
]

_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
_INDEX_NAME = _WEIGHTS_NAME + INDEX_SUFFIX
_MAX_LISTED = 20  # directory entries shown when no weights are found
_WHAT = "Wan DiT checkpoint"
_SCALE_WEIGHT = ".scale_weight"
_SCALE_INPUT = ".scale_input"
_FP8_MARKER = "scaled_fp8"


class CheckpointFiles:
    """The weight files of one checkpoint and its optional ``config.json``."""

    def __init__(self, weight_files: list[Path], config_file: Path | None) -> None:
        self.weight_files = weight_files
        self.config_file = config_file


def find_checkpoint_files(path: str | os.PathLike[str]) -> CheckpointFiles:
    """Resolve a checkpoint path to its weight files.

    Raises:
        CheckpointError: the path does not exist or holds no recognisable weights.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint path {path} does not exist")
    if path.is_file():
        sibling_config = path.parent / "config.json"
        return CheckpointFiles([path], sibling_config if sibling_config.is_file() else None)
    if (
        (path / "transformer").is_dir()
        and not (path / _WEIGHTS_NAME).exists()
        and not (path / _INDEX_NAME).exists()
    ):
        path = path / "transformer"
    config_file = path / "config.json" if (path / "config.json").is_file() else None
    index_file = path / _INDEX_NAME
    if index_file.is_file():
        return CheckpointFiles(shard_files(index_file), config_file)
    if (path / _WEIGHTS_NAME).is_file():
        return CheckpointFiles([path / _WEIGHTS_NAME], config_file)
    candidates = sorted(path.glob("*.safetensors"))
    if len(candidates) == 1:
        return CheckpointFiles(candidates, config_file)
    listing = sorted(child.name for child in path.iterdir())[:_MAX_LISTED]
    raise CheckpointError(
        f"no Wan DiT weights found in {path}: expected {_WEIGHTS_NAME}, {_INDEX_NAME} with shards, "
        f"a transformer/ directory, or exactly one .safetensors file; the directory holds {listing}"
    )


def _resolve_config(
    files: CheckpointFiles, official_shapes: dict[str, tuple[int, ...]], given: WanConfig | None
) -> WanConfig:
    if given is not None:
        return given
    text_dim = official_shapes.get("text_embedding.0.weight", (None, None))[1]
    if files.config_file is not None:
        try:
            data = json.loads(files.config_file.read_text())
        except (OSError, ValueError) as error:
            raise CheckpointError(f"{files.config_file} is not valid JSON: {error}") from error
        if data.get("_class_name") == "WanTransformer3DModel" or "num_attention_heads" in data:
            return WanConfig.from_diffusers_json(data)
        if "dim" in data and "num_heads" in data:
            return WanConfig.from_official_json(data, text_dim=text_dim)
    return infer_config(official_shapes)


def _check_keys(model: nn.Module, official_shapes: dict[str, tuple[int, ...]], source: Path) -> None:
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    report = compare_keys(official_shapes, expected)
    image_keys = any("img" in key or "image" in key for key in report.unexpected)
    report.raise_if_bad(
        source,
        "the Wan DiT config",
        "Pass the matching config=WanConfig(...) or the right checkpoint.",
        unexpected_hint=" (image-conditioned i2v/flf2v keys are not supported)" if image_keys else "",
    )


def _without_bare_marker(raw_shapes: dict[str, Any]) -> dict[str, Any]:
    """The keys without an unprefixed ``scaled_fp8`` marker (a prefixed one is dropped with the scales)."""
    return {key: value for key, value in raw_shapes.items() if key != _FP8_MARKER}


def read_wan_config(path: str | os.PathLike[str]) -> WanConfig:
    """The architecture of a checkpoint from its ``config.json`` or tensor shapes, without loading weights.

    Raises:
        CheckpointError: unreadable files or unknown layout.
    """
    files = find_checkpoint_files(path)
    raw_shapes = _without_bare_marker(read_shapes(files.weight_files, what=_WHAT))
    prefix = strip_prefix(raw_shapes)
    unprefixed = [key[len(prefix) :] for key in raw_shapes]
    diffusers = is_diffusers_naming(unprefixed)
    official_shapes = {
        diffusers_to_official(key) if diffusers else key: shape
        for key, (shape, _) in zip(unprefixed, raw_shapes.values())
    }
    return _resolve_config(files, official_shapes, None)


def _file_dtypes(files: CheckpointFiles) -> dict[str, torch.dtype]:
    """Raw key -> stored dtype over the checkpoint's files (headers only for safetensors)."""
    dtypes: dict[str, torch.dtype] = {}
    for file in files.weight_files:
        if file.suffix.lower() == ".safetensors":
            dtypes.update({name: info.dtype for name, info in read_header(file).items()})
        else:
            dtypes.update({name: t.dtype for name, t in read_torch_file(file, what=_WHAT, mmap=True).items()})
    return dtypes


def _split_scales(official_names: dict[str, str]) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Separate the scaled-fp8 extras from the weights.

    Args:
        official_names: raw key -> official name.

    Returns:
        ``(weights, scale_weights, ignored)``: raw key -> official name of the weights; module path ->
        raw key of each ``scale_weight``; raw keys that are dropped (``scale_input``, used only by fp8
        matmuls, and the ``scaled_fp8`` format marker).
    """
    weights: dict[str, str] = {}
    scales: dict[str, str] = {}
    ignored: list[str] = []
    for raw, name in official_names.items():
        if name == _FP8_MARKER:
            ignored.append(raw)
        elif name.endswith(_SCALE_WEIGHT):
            scales[name[: -len(_SCALE_WEIGHT)]] = raw
        elif name.endswith(_SCALE_INPUT):
            ignored.append(raw)
        else:
            weights[raw] = name
    return weights, scales, ignored


def _resolve_storage(
    weights_dtype: str | torch.dtype | None, file_dtypes: dict[str, torch.dtype], compute: torch.dtype
) -> torch.dtype:
    """The storage dtype of the large linears: the asked one, else the file's fp8 dtype, else `compute`."""
    asked = parse_weights_dtype(weights_dtype)
    if asked is not None:
        return asked
    found = set(file_dtypes.values())
    if len(found) == 1 and next(iter(found)) in FP8_DTYPES:
        return next(iter(found))
    return compute


def dequantized(tensor: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """A checkpoint tensor as `dtype`, multiplied by its scale (per tensor, or per output row)."""
    if scale is None:
        return tensor.to(dtype)
    scale = scale.to(device=tensor.device, dtype=torch.float32)
    if scale.numel() != 1:
        scale = scale.reshape(tensor.shape[0], *([1] * (tensor.ndim - 1)))
    return (tensor.to(torch.float32) * scale).to(dtype)


class WanDiTSource:
    """What `open_wan_dit` found in a checkpoint: its files, key names, fp8 scales and storage dtype.

    Attributes:
        path: the checkpoint path as given.
        files: the weight files.
        raw_shapes: raw key -> ``(shape, file)`` (header reads only).
        weight_names: raw key -> official name of every tensor that becomes a parameter.
        scale_keys: module path -> raw key of its ``scale_weight``.
        skipped: raw keys that are not parameters (scales, ``scale_input``, the ``scaled_fp8`` marker).
        storage: the storage dtype of the large linears.
        dtype: the compute dtype.
        linear_dtypes: the dtypes the file stores the large linears' weights in.
    """

    def __init__(self, path: Path, files: CheckpointFiles, raw_shapes: dict[str, Any],
                 weight_names: dict[str, str], scale_keys: dict[str, str], skipped: set[str],
                 storage: torch.dtype, dtype: torch.dtype) -> None:
        self.path, self.files, self.raw_shapes = path, files, raw_shapes
        self.weight_names, self.scale_keys, self.skipped = weight_names, scale_keys, skipped
        self.storage, self.dtype = storage, dtype
        self.linear_dtypes: set[torch.dtype] = set()

    def file_keys(self, file: Path) -> list[str]:
        """The raw keys of `file` that become parameters."""
        shapes = self.raw_shapes
        return [raw for raw, (_, owner) in shapes.items() if owner == file and raw not in self.skipped]

    def read_scales(self) -> dict[str, torch.Tensor]:
        """Raw key -> ``scale_weight`` tensor (small; read whole)."""
        scales: dict[str, torch.Tensor] = {}
        scale_files = {self.raw_shapes[raw][1] for raw in self.scale_keys.values()}
        for file in self.files.weight_files:
            if file in scale_files:
                scales.update(iter_file_tensors(file, what=_WHAT, names=self.scale_keys.values()))
        return scales

    def target_dtype(self, name: str) -> torch.dtype:
        """The dtype a parameter that is not a low-precision weight is kept in."""
        return torch.float32 if _keeps_fp32(name) else self.dtype


def open_wan_dit(
    path: str | os.PathLike[str],
    dtype: torch.dtype = torch.float32,
    config: WanConfig | None = None,
    weights_dtype: str | torch.dtype | None = None,
) -> tuple[WanDiT, WanDiTSource]:
    """Read a checkpoint's headers and build its model on the meta device (no weight is read).

    Every key is checked against the architecture first. The meta model's large linears are already in
    their storage dtype (`set_weights_dtype`); its other parameters are float32 until loaded.

    Raises:
        CheckpointError: unreadable files, unknown layout, or keys that do not fit (all listed).
        InputError: an unknown `weights_dtype`.
    """
    files = find_checkpoint_files(path)
    raw_shapes = _without_bare_marker(read_shapes(files.weight_files, what=_WHAT))
    prefix = strip_prefix(raw_shapes)
    unprefixed = [key[len(prefix) :] for key in raw_shapes]
    diffusers = is_diffusers_naming(unprefixed)

    def official_name(raw_key: str) -> str:
        key = raw_key[len(prefix) :]
        return diffusers_to_official(key) if diffusers else key

    weight_names, scale_keys, ignored = _split_scales({key: official_name(key) for key in raw_shapes})
    official_shapes = {name: raw_shapes[raw][0] for raw, name in weight_names.items()}
    orphans = sorted(f"{module}{_SCALE_WEIGHT}" for module in scale_keys
                     if f"{module}.weight" not in official_shapes)
    if orphans:
        raise CheckpointError(
            f"checkpoint {path} has scale_weight tensors without a weight: {format_key_list(orphans)}"
        )
    resolved = _resolve_config(files, official_shapes, config)
    with torch.device("meta"):
        model = WanDiT(resolved)
    _check_keys(model, official_shapes, Path(path))
    all_dtypes = _file_dtypes(files)
    linear_dtypes = {raw: all_dtypes[raw] for raw, name in weight_names.items()
                     if name.endswith(".weight") and is_large_linear(name[: -len(".weight")])}
    storage = _resolve_storage(weights_dtype, linear_dtypes, dtype)
    if storage != dtype:
        set_weights_dtype(model, storage, dtype)
    skipped = set(scale_keys.values()) | set(ignored)
    source = WanDiTSource(Path(path), files, raw_shapes, weight_names, scale_keys, skipped, storage, dtype)
    source.linear_dtypes = set(linear_dtypes.values())
    return model, source
