"""Checkpoint directories: written atomically, verified on load, pruned to the newest N.

Layout of ``<run>/checkpoints/step-XXXXXXX/`` (contract 3):

- ``adapter.safetensors`` (LoRA: fp32 ``<wan module>.lora_A.weight`` / ``.lora_B.weight``, metadata
  ``format = pusa-fw-lora``, ``rank``, ``alpha``, ``targets``, ``step``) or ``model.safetensors`` (full);
- ``ema.safetensors`` (optional, same keys);
- ``optimizer.safetensors`` + ``optimizer.json`` (AdamW moments by parameter name; groups and names as
  JSON: no pickle anywhere);
- ``rng.safetensors`` (every rank's torch RNG states), ``trainer_state.json`` (step, epoch, position in
  the data order, ...), ``config.json`` (the validated run config);
- an FSDP2 run on several ranks writes ``dcp/`` instead of the weights, EMA and optimizer tensors: every
  rank's shards (`pusa_fw_train.sharded`);
- ``manifest.json``, written last: every file (with its path inside the directory) and its size. A directory without it, or whose files do
  not match it, is incomplete.

A save writes everything into a hidden temporary directory beside the final one, fsyncs every file and
the directory, renames it into place, then replaces the ``latest`` pointer (a text file naming the
directory) atomically. A crash at any point leaves the previous checkpoint and pointer intact. Re-saving a
step that exists (after a resume) first points ``latest`` at a hard-linked stand-in of the old one, so the
pointer never names a directory that was just moved away.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from pusa_fw.errors import CheckpointError
from pusa_fw.io.atomic import atomic_write_bytes

__all__ = [
    "CheckpointFiles",
    "begin_checkpoint",
    "checkpoint_dir_name",
    "latest_checkpoint",
    "read_checkpoint",
    "write_checkpoint",
]

_STEP_DIR = re.compile(r"^step-(\d{7,})$")
MANIFEST = "manifest.json"


def checkpoint_dir_name(step: int) -> str:
    """``step-0000042`` for step 42."""
    return f"step-{step:07d}"


@dataclass
class CheckpointFiles:
    """The content of one checkpoint, in memory.

    Attributes:
        weights: contract names -> fp32 tensors (LoRA factors or full model weights).
        weights_kind: "adapter" or "model" (the file name stem).
        weights_metadata: safetensors metadata of the weights file (strings).
        ema: EMA weights with the same keys, or None.
        optimizer_tensors: ``<param name>.<state key>`` -> tensor.
        optimizer_json: param groups and parameter names.
        rng: ``rank<r>.<stream>`` -> uint8 RNG state tensors.
        trainer_state: step, epoch, batch position, ... (JSON-able).
        config: the validated run config as a JSON-able dict.
        sharded: the weights, EMA and AdamW state are the DCP shards in ``dcp/`` (`pusa_fw_train.sharded`),
            written by every rank; `weights`, `ema` and `optimizer_tensors` are then empty.
        directory: where the checkpoint was read from (None for one being written).
    """

    weights: dict[str, torch.Tensor]
    weights_kind: str
    weights_metadata: dict[str, str]
    ema: dict[str, torch.Tensor] | None
    optimizer_tensors: dict[str, torch.Tensor]
    optimizer_json: dict[str, Any]
    rng: dict[str, torch.Tensor]
    trainer_state: dict[str, Any]
    config: dict[str, Any]
    sharded: bool = False
    directory: Path | None = None


def _fsync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _save_tensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """One file of a checkpoint being written (inside the temporary directory, so no atomic rename here)."""
    save_file({name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}, str(path), metadata)


def begin_checkpoint(run_dir: Path, step: int) -> Path:
    """The hidden temporary directory a checkpoint of `step` is written into (renamed into place when done)."""
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    name = checkpoint_dir_name(step)
    return Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=checkpoints))


def write_checkpoint(
    run_dir: Path, files: CheckpointFiles, *, keep_last: int | None, temp: Path | None = None
) -> Path:
    """Write `files` as ``<run_dir>/checkpoints/step-XXXXXXX`` atomically, move ``latest``, prune.

    Args:
        run_dir: the run directory.
        files: the content (for a sharded checkpoint, every rank's DCP shards are already in ``temp/dcp``).
        keep_last: checkpoints to keep (None: all).
        temp: the directory from `begin_checkpoint` (default: a new one).

    Returns:
        The final checkpoint directory.
    """
    step = int(files.trainer_state["step"])
    checkpoints = run_dir / "checkpoints"
    final = checkpoints / checkpoint_dir_name(step)
    temp = temp if temp is not None else begin_checkpoint(run_dir, step)
    try:
        if not files.sharded:
            _save_tensors(temp / f"{files.weights_kind}.safetensors", files.weights, files.weights_metadata)
            if files.ema is not None:
                _save_tensors(temp / "ema.safetensors", files.ema, files.weights_metadata)
            _save_tensors(temp / "optimizer.safetensors", files.optimizer_tensors)
        _save_tensors(temp / "rng.safetensors", files.rng)
        for name, value in (
            ("optimizer.json", files.optimizer_json),
            ("trainer_state.json", files.trainer_state),
            ("config.json", files.config),
        ):
            (temp / name).write_text(json.dumps(value, indent=2, sort_keys=True), encoding="utf-8")
        written = sorted(path for path in temp.rglob("*") if path.is_file())
        manifest = {path.relative_to(temp).as_posix(): path.stat().st_size for path in written}
        (temp / MANIFEST).write_text(
            json.dumps({"step": step, "files": manifest}, indent=2), encoding="utf-8"
        )
        for path in sorted(temp.rglob("*"), reverse=True):  # files, then the folders that hold them
            _fsync_path(path)
        os.chmod(temp, 0o755)
        _fsync_path(temp)
        stale = None
        if final.exists():  # a re-save of the same step (e.g. after a resume): replace it
            stale = _stand_in(final, checkpoints)
        os.replace(temp, final)
        _fsync_path(checkpoints)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    atomic_write_bytes(checkpoints / "latest", (final.name + "\n").encode())
    if stale is not None:
        shutil.rmtree(stale)
    _prune(checkpoints, keep_last, keep=final)
    return final


def _stand_in(final: Path, checkpoints: Path) -> Path:
    """Move an old checkpoint of the same step out of the way without a moment in which ``latest`` names a
    missing directory: a hard-linked copy takes over the pointer first, then the old directory goes.

    Returns:
        The stand-in directory (delete it once ``latest`` names the new checkpoint).
    """
    stale = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".stale", dir=checkpoints))
    shutil.rmtree(stale)
    shutil.copytree(final, stale, copy_function=os.link)
    _fsync_path(checkpoints)
    atomic_write_bytes(checkpoints / "latest", (stale.name + "\n").encode())
    shutil.rmtree(final)
    return stale


def _prune(checkpoints: Path, keep_last: int | None, keep: Path) -> None:
    if keep_last is None:
        return
    steps = sorted(path for path in checkpoints.iterdir() if _STEP_DIR.match(path.name) and path.is_dir())
    for path in steps[: max(len(steps) - keep_last, 0)]:
        if path != keep:
            shutil.rmtree(path)


def latest_checkpoint(run_dir: Path) -> Path:
    """The checkpoint named by ``<run_dir>/checkpoints/latest``.

    Raises:
        CheckpointError: no pointer, or a pointer to a missing directory.
    """
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        raise CheckpointError(
            f"{str(run_dir)!r} has no checkpoints/latest pointer; it holds no finished checkpoint"
        )
    name = pointer.read_text(encoding="utf-8").strip()
    target = pointer.parent / name
    if not target.is_dir():
        raise CheckpointError(
            f"{str(pointer)!r} names {name!r}, which does not exist; pass a step-XXXXXXX directory"
        )
    return target


def _verify(directory: Path) -> dict[str, int]:
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(
            f"checkpoint {str(directory)!r} is incomplete (no {MANIFEST}: the save was interrupted); "
            "resume from an earlier step-XXXXXXX directory or the run's latest pointer"
        )
    files = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
    for name, size in files.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint {str(directory)!r} is incomplete: {name} is missing")
        if path.stat().st_size != size:
            raise CheckpointError(
                f"checkpoint {str(directory)!r} is damaged: {name} has {path.stat().st_size} bytes, "
                f"the manifest says {size}"
            )
    return files


def _metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (OSError, SafetensorError) as error:
        raise CheckpointError(f"training checkpoint file {str(path)!r} is not readable: {error}") from None


def _read_tensors(path: str) -> dict[str, torch.Tensor]:
    """The tensors of one file of the checkpoint (safetensors: no pickle)."""
    try:
        return load_file(path)
    except (OSError, SafetensorError) as error:
        raise CheckpointError(f"training checkpoint file {path!r} is not readable: {error}") from None


def read_checkpoint(directory: Path) -> CheckpointFiles:
    """Load and verify a checkpoint directory (no pickle: safetensors and JSON only).

    Raises:
        CheckpointError: an incomplete or damaged directory.
    """
    files = _verify(directory)
    kind = "adapter" if "adapter.safetensors" in files else "model"
    weights_path = directory / f"{kind}.safetensors"

    def read_json(name: str) -> Any:
        return json.loads((directory / name).read_text(encoding="utf-8"))

    if any(name.startswith("dcp/") for name in files):  # each rank reads its own shards (sharded.py)
        return CheckpointFiles(
            weights={},
            weights_kind=str(read_json("trainer_state.json").get("weights_kind", "model")),
            weights_metadata={},
            ema=None,
            optimizer_tensors={},
            optimizer_json=read_json("optimizer.json"),
            rng=_read_tensors(str(directory / "rng.safetensors")),
            trainer_state=read_json("trainer_state.json"),
            config=read_json("config.json"),
            sharded=True,
            directory=directory,
        )
    return CheckpointFiles(
        weights=_read_tensors(str(weights_path)),
        weights_kind=kind,
        weights_metadata=_metadata(weights_path),
        ema=_read_tensors(str(directory / "ema.safetensors")) if "ema.safetensors" in files else None,
        optimizer_tensors=_read_tensors(str(directory / "optimizer.safetensors")),
        optimizer_json=read_json("optimizer.json"),
        rng=_read_tensors(str(directory / "rng.safetensors")),
        trainer_state=read_json("trainer_state.json"),
        config=read_json("config.json"),
        directory=directory,
    )
