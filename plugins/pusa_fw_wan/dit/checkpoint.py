"""Loading a Wan2.1 T2V DiT checkpoint into `WanDiT` with about one copy of the weights in memory.

Accepted layouts (detected from the files and the key names):

- official directory: ``config.json`` + ``diffusion_pytorch_model.safetensors``, or shards listed in
  ``diffusion_pytorch_model.safetensors.index.json``;
- diffusers: a pipeline directory with ``transformer/``, or the ``transformer/`` directory itself
  (``WanTransformer3DModel`` names, mapped to the official ones);
- a single ``.safetensors`` file (keys optionally prefixed ``model.diffusion_model.`` or
  ``diffusion_model.``),
  or a ``.pt``/``.pth``/``.bin`` state dict (loaded with ``weights_only=True``).

The model is built on the meta device; every key is checked against the headers before any weight is read
(a `CheckpointError` lists missing, unexpected and mis-shaped keys); then the tensors are read one at a time,
cast and moved to their device, and assigned as parameters.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from pusa_fw.errors import CheckpointError

from pusa_fw_wan.dit.config import WanConfig
from pusa_fw_wan.dit.model import WanDiT, _keeps_fp32
from pusa_fw_wan.dit.key_mapping import diffusers_to_official, infer_config, is_diffusers_naming, strip_prefix
from pusa_fw_wan.weights.safetensors import iter_tensors, read_header

__all__ = ["CheckpointFiles", "find_checkpoint_files", "load_wan_dit", "read_wan_config"]

_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_MAX_LISTED = 20


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
        try:
            weight_map = json.loads(index_file.read_text())["weight_map"]
        except (OSError, ValueError, KeyError) as error:
            raise CheckpointError(f"{index_file} is not a valid shard index: {error}") from error
        shards = sorted(set(weight_map.values()))
        absent = [name for name in shards if not (path / name).is_file()]
        if absent:
            raise CheckpointError(f"{index_file} lists shards that are missing: {absent}")
        return CheckpointFiles([path / name for name in shards], config_file)
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


def _read_shapes(files: list[Path]) -> dict[str, tuple[tuple[int, ...], Path]]:
    """Key -> (shape, file) from the safetensors headers (or from a loaded torch state dict)."""
    shapes: dict[str, tuple[tuple[int, ...], Path]] = {}
    for file in files:
        if file.suffix in _TORCH_SUFFIXES:
            for name, tensor in _load_torch_file(file).items():
                shapes[name] = (tuple(tensor.shape), file)
            continue
        for name, info in read_header(file).items():
            if name in shapes:
                raise CheckpointError(
                    f"tensor {name!r} appears in both {shapes[name][1].name} and {file.name}"
                )
            shapes[name] = (info.shape, file)
    return shapes


def _load_torch_file(file: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:
        raise CheckpointError(f"cannot load {file} as a weights-only torch state dict: {error}") from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{file} does not hold a flat state dict of tensors")
    return state


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


def _format_keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... ({len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


def _check_keys(model: nn.Module, official_shapes: dict[str, tuple[int, ...]], source: Path) -> None:
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    missing = sorted(set(expected) - set(official_shapes))
    unexpected = sorted(set(official_shapes) - set(expected))
    mismatched = sorted(
        f"{name} (checkpoint {list(official_shapes[name])}, model {list(expected[name])})"
        for name in set(expected) & set(official_shapes)
        if official_shapes[name] != expected[name]
    )
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_format_keys(missing)}")
        if unexpected:
            hint = (
                " (image-conditioned i2v/flf2v keys are not supported)"
                if any("img" in key or "image" in key for key in unexpected)
                else ""
            )
            parts.append(f"unexpected keys ({len(unexpected)}){hint}: {_format_keys(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {_format_keys(mismatched)}")
        raise CheckpointError(
            f"checkpoint {source} does not fit the Wan DiT config; "
            + "; ".join(parts)
            + ". Pass the matching config=WanConfig(...) or the right checkpoint."
        )


def _iter_file(file: Path) -> Iterator[tuple[str, torch.Tensor]]:
    if file.suffix in _TORCH_SUFFIXES:
        state = _load_torch_file(file)
        for name in list(state):
            yield name, state.pop(name)
    else:
        yield from iter_tensors(file)


def _assign(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_path, _, attribute = name.rpartition(".")
    module = model.get_submodule(module_path) if module_path else model
    old = module._parameters[attribute]
    module._parameters[attribute] = nn.Parameter(
        tensor, requires_grad=old.requires_grad if old is not None else True
    )


def read_wan_config(path: str | os.PathLike[str]) -> WanConfig:
    """The architecture of a checkpoint from its ``config.json`` or tensor shapes, without loading weights.

    Raises:
        CheckpointError: unreadable files or unknown layout.
    """
    files = find_checkpoint_files(path)
    raw_shapes = _read_shapes(files.weight_files)
    prefix = strip_prefix(raw_shapes)
    unprefixed = [key[len(prefix) :] for key in raw_shapes]
    diffusers = is_diffusers_naming(unprefixed)
    official_shapes = {
        diffusers_to_official(key) if diffusers else key: shape
        for key, (shape, _) in zip(unprefixed, raw_shapes.values())
    }
    return _resolve_config(files, official_shapes, None)


def load_wan_dit(
    path: str | os.PathLike[str],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    config: WanConfig | None = None,
) -> WanDiT:
    """Load a Wan2.1 T2V DiT checkpoint (see the module docstring for the layouts).

    Args:
        path: directory or weight file.
        dtype: compute dtype of the large linears; `FP32_PARAMETER_PATTERNS` stay float32.
        device: target device of the weights.
        config: overrides ``config.json`` / shape inference.

    Returns:
        The model in eval mode.

    Raises:
        CheckpointError: unreadable files, unknown layout, or keys that do not fit (all listed).
    """
    files = find_checkpoint_files(path)
    raw_shapes = _read_shapes(files.weight_files)
    prefix = strip_prefix(raw_shapes)
    unprefixed = [key[len(prefix) :] for key in raw_shapes]
    diffusers = is_diffusers_naming(unprefixed)

    def official_name(raw_key: str) -> str:
        key = raw_key[len(prefix) :]
        return diffusers_to_official(key) if diffusers else key

    official_shapes = {official_name(key): shape for key, (shape, _) in raw_shapes.items()}
    resolved = _resolve_config(files, official_shapes, config)
    with torch.device("meta"):
        model = WanDiT(resolved)
    _check_keys(model, official_shapes, Path(path))

    device = torch.device(device)
    for file in files.weight_files:
        for raw_key, tensor in _iter_file(file):
            name = official_name(raw_key)
            target = torch.float32 if _keeps_fp32(name) else dtype
            _assign(model, name, tensor.to(device=device, dtype=target))
            del tensor
    still_meta = [name for name, parameter in model.named_parameters() if parameter.is_meta]
    if still_meta:
        raise CheckpointError(f"checkpoint {path} left parameters unfilled: {_format_keys(still_meta)}")
    return model.eval()
