"""Sharded checkpoints of FSDP2 runs with ``torch.distributed.checkpoint`` (DCP): each rank writes and reads
only its own shards, and no rank ever holds the whole model, EMA or optimizer state.

The DCP part of a checkpoint is the ``dcp/`` folder of its directory: tensors only (no pickled objects),
keyed ``model.<name>``, ``ema.<name>`` (contract names, as in the safetensors layout) and
``optim.<parameter path>.<slot>`` (AdamW moments and step, from ``get_optimizer_state_dict``). The param
groups, RNG states, trainer state and config stay JSON / safetensors beside it, written by rank 0, and the
manifest lists every file of every rank. Loading reshards: a checkpoint written by N ranks loads on M ranks,
or in one process (DCP reads the byte ranges each rank's shards need).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pusa_fw.errors import CheckpointError

from .state_io import EMA

__all__ = [
    "SHARDED_DIR",
    "load_sharded",
    "read_sharded_tensors",
    "safetensors_copy",
    "safetensors_view",
    "save_sharded",
]

SHARDED_DIR = "dcp"


def _alone() -> bool:
    """True without a process group (one process reads and writes every shard itself)."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized())


def _optimizer_tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """``optim.<parameter path>.<slot>`` -> this rank's (sharded) state tensor (initialises a fresh state)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = get_optimizer_state_dict(model, optimizer)
    return {
        f"optim.{path}.{slot}": value
        for path, slots in state["state"].items()
        for slot, value in slots.items()
        if isinstance(value, torch.Tensor)
    }


def _state(
    model: nn.Module, tensors: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, ema: EMA | None
) -> dict[str, torch.Tensor]:
    state = {f"model.{name}": tensor.detach() for name, tensor in tensors.items()}
    if ema is not None:
        state.update({f"ema.{name}": value for name, value in ema.shadow.items()})
    state.update(_optimizer_tensors(model, optimizer))
    return state


def save_sharded(
    directory: Path,
    model: nn.Module,
    tensors: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    ema: EMA | None,
) -> None:
    """Write this rank's shards of the weights, EMA and AdamW state into ``directory/dcp`` (a collective)."""
    import torch.distributed.checkpoint as dcp

    state = _state(model, tensors, optimizer, ema)
    dcp.save(state, checkpoint_id=str(directory / SHARDED_DIR), no_dist=_alone())


def load_sharded(
    directory: Path,
    model: nn.Module,
    tensors: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    ema: EMA | None,
) -> None:
    """Load ``directory/dcp`` into this rank's (sharded or whole) tensors, reading only what they hold.

    Raises:
        CheckpointError: the checkpoint lacks a tensor this run trains (another run's checkpoint).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    reader = dcp.FileSystemReader(str(directory / SHARDED_DIR))
    stored = set(reader.read_metadata().state_dict_metadata)
    state = _state(model, tensors, optimizer, ema)
    missing = sorted(key for key in state if key not in stored)
    if missing:
        raise CheckpointError(
            f"checkpoint {str(directory)!r} has no {missing[:3]} ({len(missing)} missing); "
            "it is from another run"
        )
    with torch.no_grad():
        dcp.load(state, storage_reader=reader, no_dist=_alone())
    optimizer_state = get_optimizer_state_dict(model, optimizer)
    for path, slots in optimizer_state["state"].items():
        for slot in slots:
            if f"optim.{path}.{slot}" in state:
                slots[slot] = state[f"optim.{path}.{slot}"]
    set_optimizer_state_dict(model, optimizer, optimizer_state)


def read_sharded_tensors(directory: Path, prefix: str) -> dict[str, torch.Tensor]:
    """Whole CPU tensors of one part (``"model"`` or ``"ema"``) of a checkpoint's ``dcp/`` folder, in one
    process (for exports and packing; training never reads a whole sharded checkpoint).

    Raises:
        CheckpointError: no tensors under that prefix.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = dcp.FileSystemReader(str(directory / SHARDED_DIR))
    metadata: Any = reader.read_metadata()
    state = {
        key: torch.empty(tuple(item.size), dtype=item.properties.dtype)
        for key, item in metadata.state_dict_metadata.items()
        if key.startswith(prefix + ".") and isinstance(item, TensorStorageMetadata)
    }
    if not state:
        raise CheckpointError(f"checkpoint {str(directory)!r} holds no {prefix!r} tensors in {SHARDED_DIR}/")
    dcp.load(state, storage_reader=reader, no_dist=True)
    return {key[len(prefix) + 1 :]: tensor for key, tensor in state.items()}


def safetensors_copy(directory: Path, scratch: Path) -> Path:
    """A safetensors-layout copy of a sharded checkpoint's weights (and EMA) with their metadata and config,
    for tools that read that layout (the backbone adapter's LoRA export).

    Args:
        directory: the sharded checkpoint.
        scratch: an empty directory to write the copy into.

    Returns:
        `scratch`, now holding ``adapter.safetensors`` or ``model.safetensors``, ``ema.safetensors`` when the
        run kept an EMA, and ``config.json``.
    """
    import json
    import shutil

    from safetensors.torch import save_file

    state = json.loads((directory / "trainer_state.json").read_text(encoding="utf-8"))
    metadata = {str(key): str(value) for key, value in state.get("weights_metadata", {}).items()}
    kind = str(state.get("weights_kind", "model"))
    save_file(read_sharded_tensors(directory, "model"), str(scratch / f"{kind}.safetensors"), metadata)
    try:
        save_file(read_sharded_tensors(directory, "ema"), str(scratch / "ema.safetensors"), metadata)
    except CheckpointError:  # the run kept no EMA
        pass
    shutil.copyfile(directory / "config.json", scratch / "config.json")
    return scratch


@contextmanager
def safetensors_view(directory: Path) -> Iterator[Path]:
    """`safetensors_copy` of a sharded checkpoint in a temporary directory, removed when the block ends."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="pusa-fw-export-") as scratch:
        yield safetensors_copy(directory, Path(scratch))
