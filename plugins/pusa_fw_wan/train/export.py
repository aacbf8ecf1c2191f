"""Export a trained LoRA from a training checkpoint to one file that ComfyUI, diffusers and our loader read.

Input (the checkpoint contract): ``<run>/checkpoints/step-XXXXXXX/adapter.safetensors`` with fp32
``<wan module>.lora_A.weight`` ``[r, in]`` / ``.lora_B.weight`` ``[out, r]`` and metadata ``format =
pusa-fw-lora``, ``rank``, ``alpha``, ``targets``; optionally ``ema.safetensors`` with the same keys;
``config.json`` in the checkpoint (or the run root); ``<run>/checkpoints/latest`` names the newest one.

Output layouts:

- ``comfyui`` (default): ``diffusion_model.<wan module>.lora_A.weight`` / ``.lora_B.weight`` and a scalar
  ``diffusion_model.<wan module>.alpha``;
- ``diffusers``: ``transformer.<diffusers module>.lora_A.weight`` / ``.lora_B.weight``, with the scale
  ``alpha / rank`` folded into ``lora_B``, and a ``lora_adapter_metadata`` header in diffusers' own layout
  (the keys prefixed with the component, as ``WanPipeline.save_lora_weights`` writes them):
  ``transformer.r`` = rank, ``transformer.lora_alpha`` = rank (scale 1, the folded file's truth) and
  ``transformer.target_modules`` = the exact diffusers module paths. diffusers' loaders keep only the
  metadata keys under their prefix (an unprefixed header became an empty ``LoraConfig`` and peft's
  ``KeyError: 'model_type'``); the scale is folded because ``WanTransformer3DModel.load_lora_adapter(path)``
  reads no header at all unless given ``use_safetensors=True``, and a reader that ignores the header then
  applies scale 1: with the scale in the tensors, every reader applies the trained LoRA.

Both carry the same metadata: rank, alpha (the training alpha), targets, the PTSS law, the base-model hash,
the step, the recommended strength and the full training config. Strength 1 applies the LoRA exactly as it
was trained (``alpha / rank * B @ A``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pusa_fw.errors import CheckpointError, InputError

from pusa_fw_wan.lora.names import original_to_diffusers
from pusa_fw_wan.weights import read_tensor_file, write_tensor_file

__all__ = ["EXPORT_FORMAT", "LAYOUTS", "ExportedLora", "base_model_hash", "export_lora", "find_checkpoint"]

EXPORT_FORMAT = "pusa-fw-lora-export"
LAYOUTS = ("comfyui", "diffusers")
_ADAPTER_FORMAT = "pusa-fw-lora"
_KEY = re.compile(r"(?P<module>.+)\.(?P<half>lora_A|lora_B)\.weight")
_STEP_DIR = re.compile(r"step-(\d+)")


@dataclass(frozen=True)
class ExportedLora:
    """What `export_lora` wrote: the file, its layout, module count, rank, alpha, step and metadata."""

    path: Path
    layout: str
    modules: int
    rank: int
    alpha: float
    step: int | None
    metadata: dict[str, str]


def find_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The checkpoint directory named by `path`: a checkpoint itself, or a run (or its ``checkpoints/``)
    whose ``latest`` pointer names one.

    Raises:
        CheckpointError: nothing there is a checkpoint, or ``latest`` names a missing directory.
    """
    given = Path(path).expanduser()
    if any((given / name).exists() for name in ("adapter.safetensors", "model.safetensors", "dcp")):
        return given
    for pointer in (given / "checkpoints" / "latest", given / "latest"):
        if pointer.is_file():
            name = pointer.read_text(encoding="utf-8").strip()
            target = Path(name) if Path(name).is_absolute() else pointer.parent / name
            if not target.is_dir():
                raise CheckpointError(
                    f"{str(pointer)!r} names {name!r}, which is not a directory; the run's newest checkpoint "
                    "is missing: pass a step-XXXXXXX directory instead"
                )
            return target
    raise CheckpointError(
        f"{str(given)!r} is neither a checkpoint (no adapter.safetensors) nor a run directory "
        "(no checkpoints/latest); pass <run> or <run>/checkpoints/step-XXXXXXX"
    )


def base_model_hash(path: str | os.PathLike[str]) -> str:
    """SHA-256 over the DiT weight files of a base model (a file, or a checkpoint directory's weight files as
    the DiT loader finds them, in order), prefixed ``sha256:``. Reads every byte: about a minute at 14B."""
    import hashlib

    from pusa_fw_wan.dit.checkpoint import find_checkpoint_files

    try:
        files = find_checkpoint_files(Path(path).expanduser()).weight_files
    except CheckpointError as error:
        raise InputError(f"--base-model {str(path)!r}: {error}") from error
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def _read_config(checkpoint: Path) -> dict[str, Any]:
    for candidate in (checkpoint / "config.json", checkpoint.parent.parent / "config.json"):
        if candidate.is_file():
            try:
                loaded = json.loads(candidate.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise CheckpointError(
                    f"{str(candidate)!r} is not JSON ({error}); the checkpoint is damaged"
                ) from error
            return loaded if isinstance(loaded, dict) else {}
    return {}


def _find_key(tree: Any, names: tuple[str, ...]) -> Any:
    """The first value under any of `names`, searching nested dicts depth-first (None when absent)."""
    if isinstance(tree, dict):
        for name in names:
            if name in tree:
                return tree[name]
        for value in tree.values():
            found = _find_key(value, names)
            if found is not None:
                return found
    return None


def _config_model_path(config: dict[str, Any]) -> Path | None:
    """The base checkpoint the run trained on (``model.path`` of the training config), when it exists here."""
    model = config.get("model")
    path = model.get("path") if isinstance(model, dict) else None
    return Path(path) if isinstance(path, str) and Path(path).exists() else None


def _pairs(tensors: dict[str, torch.Tensor], source: Path) -> dict[str, dict[str, torch.Tensor]]:
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    foreign = []
    for key, tensor in tensors.items():
        match = _KEY.fullmatch(key)
        if match is None:
            foreign.append(key)
            continue
        pairs.setdefault(match["module"], {})[match["half"]] = tensor
    if foreign:
        raise CheckpointError(
            f"{str(source)!r} has keys that are not <module>.lora_A/B.weight: {foreign[:10]}; "
            "it is not a pusa-fw adapter file"
        )
    for module, pair in pairs.items():
        if (
            set(pair) != {"lora_A", "lora_B"}
            or pair["lora_A"].ndim != 2
            or pair["lora_B"].ndim != 2
            or pair["lora_A"].shape[0] != pair["lora_B"].shape[1]
        ):
            shapes = {half: list(value.shape) for half, value in pair.items()}
            raise CheckpointError(
                f"{str(source)!r}: module {module!r} has an incomplete or mismatched pair {shapes}"
            )
    if not pairs:
        raise CheckpointError(f"{str(source)!r} holds no LoRA tensors")
    return pairs


def _adapter_file(checkpoint: Path, ema: bool) -> Path:
    name = "ema.safetensors" if ema else "adapter.safetensors"
    path = checkpoint / name
    if path.is_file():
        return path
    if not (checkpoint / "adapter.safetensors").is_file() and (checkpoint / "model.safetensors").is_file():
        raise CheckpointError(
            f"{str(checkpoint)!r} is a full fine-tune checkpoint (model.safetensors); "
            "there is no LoRA to export"
        )
    hint = "; the run kept no EMA: drop --ema" if ema else ""
    raise CheckpointError(f"{str(path)!r} does not exist{hint}")


def _diffusers_names(pairs: dict[str, dict[str, torch.Tensor]]) -> dict[str, str]:
    """Original module path -> diffusers module path, for every exported module."""
    names = {}
    for module in pairs:
        diffusers = original_to_diffusers(module)
        if diffusers is None:
            raise CheckpointError(f"module {module!r} has no diffusers name; export with --layout comfyui")
        names[module] = diffusers
    return names


def _output_tensors(
    pairs: dict[str, dict[str, torch.Tensor]], alpha: float, rank: int, layout: str
) -> dict[str, torch.Tensor]:
    """The file's tensors: A ``[r, in]`` and B ``[out, r]`` per module (ComfyUI: plus a scalar alpha;
    diffusers: B scaled by ``alpha / rank``)."""
    tensors: dict[str, torch.Tensor] = {}
    diffusers = _diffusers_names(pairs) if layout == "diffusers" else {}
    for module in sorted(pairs):
        down, up = (pairs[module][half].to(torch.float32).contiguous() for half in ("lora_A", "lora_B"))
        if layout == "comfyui":
            prefix = f"diffusion_model.{module}"
            tensors[f"{prefix}.alpha"] = torch.tensor(alpha, dtype=torch.float32)
        else:
            prefix = f"transformer.{diffusers[module]}"
            up = up * (alpha / rank)
        tensors[f"{prefix}.lora_A.weight"] = down
        tensors[f"{prefix}.lora_B.weight"] = up
    return tensors


def _diffusers_adapter_metadata(pairs: dict[str, dict[str, torch.Tensor]], rank: int) -> str:
    """diffusers' ``lora_adapter_metadata`` for the folded tensors: the peft ``LoraConfig`` of the
    ``transformer`` component, each key prefixed ``transformer.`` (diffusers drops unprefixed keys)."""
    config = {"r": rank, "lora_alpha": rank, "target_modules": sorted(_diffusers_names(pairs).values())}
    return json.dumps({f"transformer.{key}": value for key, value in config.items()}, sort_keys=True)


def export_lora(
    checkpoint_or_run: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    layout: str = "comfyui",
    ema: bool = False,
    strength: float = 1.0,
    base_model: str | os.PathLike[str] | None = None,
) -> ExportedLora:
    """Write a checkpoint's LoRA as one ``.safetensors`` file (see the module docstring).

    Args:
        checkpoint_or_run: a ``step-XXXXXXX`` checkpoint directory, or a run directory (its ``latest``).
        out: the file to write (atomically).
        layout: ``comfyui`` or ``diffusers`` key names.
        ema: export the EMA weights (``ema.safetensors``) instead of the trained ones.
        strength: the recommended strength written into the metadata.
        base_model: base model weights to hash into ``base_model_hash``; default: the checkpoint's own hash,
            else the training config's ``model.path`` when it exists here (reading every byte of it).

    Returns:
        An `ExportedLora`.

    Raises:
        InputError: unknown layout, bad output path.
        CheckpointError: no checkpoint, no adapter, malformed tensors or metadata.
    """
    if layout not in LAYOUTS:
        raise InputError(f"--layout {layout!r} is unknown; use {' or '.join(LAYOUTS)}")
    checkpoint = find_checkpoint(checkpoint_or_run)
    if (checkpoint / "dcp").is_dir():  # sharded by an FSDP2 run: read whole into a safetensors copy first
        from pusa_fw_train.sharded import safetensors_view

        with safetensors_view(checkpoint) as copy:
            return export_lora(copy, out, layout=layout, ema=ema, strength=strength, base_model=base_model)
    source = _adapter_file(checkpoint, ema)
    tensors, metadata = read_tensor_file(source)
    if metadata.get("format") != _ADAPTER_FORMAT and ema:
        _, metadata = read_tensor_file(checkpoint / "adapter.safetensors")
    if metadata.get("format") != _ADAPTER_FORMAT:
        raise CheckpointError(
            f"{str(source)!r} has metadata format {metadata.get('format')!r}, not {_ADAPTER_FORMAT!r}; "
            "it was not written by pusa-fw train"
        )
    pairs = _pairs(tensors, source)
    try:
        rank, alpha = int(metadata["rank"]), float(metadata["alpha"])
        targets = json.loads(metadata.get("targets", "[]"))
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{str(source)!r}: metadata rank/alpha/targets unreadable ({error})") from error
    ranks = sorted({int(pair["lora_A"].shape[0]) for pair in pairs.values()})
    if ranks != [rank]:
        raise CheckpointError(f"{str(source)!r}: metadata rank {rank} but the tensors have ranks {ranks}")
    config = _read_config(checkpoint)
    step_match = _STEP_DIR.fullmatch(checkpoint.name)
    step = (
        int(metadata["step"])
        if metadata.get("step", "").isdigit()
        else (int(step_match.group(1)) if step_match else None)
    )
    base_hash = metadata.get("base_model_hash") or _find_key(config, ("base_model_hash",))
    trained_on = _config_model_path(config)
    if base_model is not None or (not base_hash and trained_on is not None):
        base_hash = base_model_hash(base_model if base_model is not None else trained_on)
    ptss = json.loads(metadata["ptss"]) if metadata.get("ptss") else _find_key(config, ("ptss",))
    header = {
        "format": EXPORT_FORMAT,
        "layout": layout,
        "rank": str(rank),
        "alpha": repr(alpha),
        "targets": json.dumps(targets),
        "modules": str(len(pairs)),
        "ptss": json.dumps(ptss),
        "base_model_hash": str(base_hash or ""),
        "step": "" if step is None else str(step),
        "recommended_strength": repr(float(strength)),
        "ema": "true" if ema else "false",
        "config": json.dumps(config),
    }
    if layout == "diffusers":
        header["lora_adapter_metadata"] = _diffusers_adapter_metadata(pairs, rank)
    target = write_tensor_file(out, _output_tensors(pairs, alpha, rank, layout), metadata=header)
    return ExportedLora(target, layout, len(pairs), rank, alpha, step, header)
