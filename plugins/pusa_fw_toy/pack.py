"""Packing a training checkpoint into a toy model directory.

A full-training run of a toy model (``mode = "full"``, started from a ``pusa-fw toy-init`` directory)
saves ``model.safetensors`` (and ``ema.safetensors``) in each checkpoint. `pack_checkpoint` combines those
weights with the codec, world and text encoder of the directory the run started from, so the result
loads through ``pusa-fw generate --model``, ``eval-toy --base`` and a VTA run's ``model.path``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from pusa_fw.errors import CheckpointError, InputError
from pusa_fw.io.atomic import atomic_path, atomic_write_bytes

from pusa_fw_toy.model_dir import DIT_WEIGHTS, TOY_MANIFEST, read_spec

__all__ = ["pack_checkpoint", "resolve_checkpoint"]

DIT_FULL = "model.safetensors"
DIT_EMA = "ema.safetensors"


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint directory from a run directory (its ``checkpoints/latest``) or a checkpoint directory.

    Raises:
        CheckpointError: neither a run with a ``latest`` pointer nor a checkpoint directory.
    """
    root = Path(path).expanduser()
    latest = root / "checkpoints" / "latest"
    if latest.is_file():
        named = latest.read_text().strip()
        candidate = Path(named) if Path(named).is_absolute() else root / "checkpoints" / named
        if candidate.is_dir():
            return candidate
        raise CheckpointError(f"{str(latest)!r} names {named!r}, which is not a directory; the run is damaged")
    if (root / "config.json").is_file() and any((root / name).exists() for name in (DIT_FULL, DIT_EMA, "dcp")):
        return root
    raise CheckpointError(
        f"{str(root)!r} is neither a training run (checkpoints/latest) nor a checkpoint directory with "
        f"{DIT_FULL}; pass one of those"
    )


def pack_checkpoint(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], *,
                    init_dir: str | os.PathLike[str] | None = None, ema: bool = False,
                    walls: str | None = None, position_ramps: bool = False, add_blocks: int = 0) -> Path:
    """Turn a full-training checkpoint into a toy model directory (for generate, eval-toy and VTA training).

    The codec, world and text encoder come from the toy directory the run started from (the training
    config's ``model.path``, or `init_dir`); the DiT weights from the checkpoint's ``model.safetensors``
    (``ema.safetensors`` with `ema`), or from its DCP shards (``dcp/``) when a full FSDP2 run wrote those.

    Args:
        checkpoint: a checkpoint directory, a run directory (its latest checkpoint is used), or a toy
            model directory (its weights, e.g. to write them into another world with `walls`).
        out: the toy model directory to write (created; its parent must exist).
        init_dir: the toy directory the run started from, when the config does not name it.
        ema: use the EMA weights.
        walls: None keeps the starting directory's world; ``"bounce"`` or ``"none"`` writes the model
            into that world instead (a curriculum: weights trained without walls, to be trained on with
            them next; ``"bounce"`` moves at `pusa_fw_toy.cli.BOUNCE_SPEED`).
        position_ramps: give a model without them the codec's position channels
            (`pusa_fw_toy.codec.ToyCodecConfig.position_ramps`), widening its DiT with zero weights
            (`pusa_fw_toy.widen.widen_channels`: the same video until trained on). False keeps the codec.
        add_blocks: append this many identity blocks to the DiT (`pusa_fw_toy.deepen.add_blocks`: the
            same videos until trained on), for a curriculum stage that needs more capacity.

    Returns:
        The written directory.

    Raises:
        CheckpointError: missing files, or weights that do not fit the starting directory's DiT.
    """
    import shutil

    from pusa_fw_toy.model_dir import is_toy_dir

    if is_toy_dir(checkpoint):  # a packed model directory: repack its weights (e.g. into another world)
        if ema:
            raise InputError(f"{str(checkpoint)!r} is a toy model directory, which holds one set of weights; "
                             "drop --ema")
        directory = Path(checkpoint).expanduser()
        return _pack(directory, directory / DIT_WEIGHTS, out, init_dir or directory, ema, walls, position_ramps,
                     add_blocks)
    source = resolve_checkpoint(checkpoint)
    weights = source / (DIT_EMA if ema else DIT_FULL)
    if (source / "dcp").is_dir():  # a full FSDP2 run on several ranks: its DCP shards, read whole here
        from pusa_fw_train.sharded import read_sharded_tensors
        from safetensors.torch import save_file

        scratch = Path(tempfile.mkdtemp(prefix="toy-pack-"))
        try:
            weights = scratch / weights.name
            save_file(read_sharded_tensors(source, "ema" if ema else "model"), str(weights))
            return _pack(source, weights, out, init_dir, ema, walls, position_ramps, add_blocks)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return _pack(source, weights, out, init_dir, ema, walls, position_ramps, add_blocks)


def _pack(source: Path, weights: Path, out: str | os.PathLike[str], init_dir: str | os.PathLike[str] | None,
          ema: bool, walls: str | None = None, position_ramps: bool = False, add_blocks: int = 0) -> Path:
    import shutil

    from pusa_fw.io.files import tensor_shapes

    if not weights.is_file():
        raise CheckpointError(f"{str(source)!r} has no {weights.name}; it is not a full-training checkpoint"
                              + (" with EMA (drop --ema)" if ema else ""))
    if init_dir is None:
        try:
            init_dir = json.loads((source / "config.json").read_text())["model"]["path"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{str(source / 'config.json')!r} does not name model.path; pass --init DIR") from error
    start = Path(str(init_dir)).expanduser()
    spec = read_spec(start)
    if walls is not None:
        from pusa_fw_toy.cli import BOUNCE_SPEED

        world = {**spec.world.model_dump(), "walls": walls}
        if walls == "bounce":
            world["speed"] = BOUNCE_SPEED
        spec = spec.model_copy(update={"world": type(spec.world)(**world)})
    expected = tensor_shapes(start / DIT_WEIGHTS)
    found = tensor_shapes(weights)
    if expected != found:
        different = sorted(set(expected) ^ set(found)) or sorted(k for k in expected if expected[k] != found[k])
        raise CheckpointError(
            f"{str(weights)!r} does not fit the DiT of {str(start)!r} (e.g. {different[:3]}); pass the toy "
            "directory this run started from"
        )
    root = Path(out).expanduser()
    if not root.parent.is_dir():
        raise InputError(f"cannot create {str(root)!r}: {str(root.parent)!r} does not exist; create it first")
    if add_blocks < 0:
        raise InputError(f"--add-blocks {add_blocks} is negative; pass 0 (keep the DiT) or more")
    widen = position_ramps and not spec.codec.position_ramps
    root.mkdir(exist_ok=True)
    dit_config = (start / "config.json").read_bytes()
    with atomic_path(root / DIT_WEIGHTS) as temp:
        if widen or add_blocks:
            dit_config = _reshape(weights, temp, dit_config, widen, add_blocks)
            if widen:
                spec = spec.model_copy(update={"codec": spec.codec.model_copy(update={"position_ramps": True})})
        else:
            shutil.copyfile(weights, temp)
    with atomic_path(root / spec.text_encoder) as temp:
        shutil.copyfile(start / spec.text_encoder, temp)
    atomic_write_bytes(root / "config.json", dit_config)
    atomic_write_bytes(root / TOY_MANIFEST, spec.model_dump_json(indent=2).encode())
    return root


def _reshape(weights: Path, out: Path, dit_config: bytes, widen: bool, added_blocks: int) -> bytes:
    """Write `weights` widened by the position channels and/or deepened to `out`; return the fitting config."""
    from safetensors.torch import load_file, save_file

    from pusa_fw_toy.codec import POSITION_CHANNELS
    from pusa_fw_toy.deepen import add_blocks
    from pusa_fw_toy.widen import widen_channels

    tensors = load_file(str(weights))
    config = json.loads(dit_config)
    if widen:
        tensors = widen_channels(tensors, POSITION_CHANNELS)
        config["in_dim"] += POSITION_CHANNELS
        config["out_dim"] += POSITION_CHANNELS
    if added_blocks:
        tensors, config["num_layers"] = add_blocks(tensors, added_blocks)
    save_file(tensors, str(out))
    return (json.dumps(config, indent=2) + "\n").encode()
