"""Saving and restoring a `Trainer`'s whole state: what goes into a checkpoint and how it comes back.

`snapshot` gathers the trained tensors, the AdamW state, the EMA, every rank's RNG states, the step and
the position in the data order into `CheckpointFiles`; `restore` puts them back into a freshly built
trainer of the same config, which then continues exactly where the saved one was. Metric records past the
restored step (from a run that went on after its last checkpoint) are dropped from ``log.jsonl``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pusa_fw.errors import CheckpointError
from pusa_fw.io.atomic import atomic_write_bytes

from .checkpoint import CheckpointFiles, latest_checkpoint, read_checkpoint
from .config import TrainConfig, config_differences, validate_train_config
from .order import OrderPosition
from .state_io import load_optimizer_state, optimizer_state_tensors, rng_state, set_rng_state

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["check_resume_config", "find_checkpoint", "restore", "snapshot"]


def find_checkpoint(given: Path) -> Path:
    """`given` itself when it is a checkpoint directory, else the run's ``checkpoints/latest``."""
    if (given / "manifest.json").exists() or given.name.startswith("step-"):
        return given
    return latest_checkpoint(given)


def check_resume_config(directory: Path, config: TrainConfig | None) -> TrainConfig:
    """The config to resume with: `config` if it differs from the saved one only where allowed.

    Raises:
        CheckpointError: one line listing every setting that differs.
    """
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"checkpoint {str(directory)!r} has no config.json; it is incomplete")
    saved = validate_train_config(json.loads(config_file.read_text(encoding="utf-8")))
    if config is None:
        return saved
    differences = config_differences(saved, config)
    if differences:
        raise CheckpointError(f"the config differs from the run's in {directory}: " + "; ".join(differences))
    return config


def snapshot(trainer: Trainer) -> CheckpointFiles | None:
    """The trainer's state as checkpoint content (None on ranks other than 0; every rank must call it)."""
    context, config = trainer.context, trainer.config
    weights = {name: context.full_tensor(tensor) for name, tensor in trainer.tensors.items()}
    optimizer_tensors, optimizer_json = optimizer_state_tensors(trainer.optimizer, trainer.names)
    optimizer_tensors = {key: context.full_tensor(value) for key, value in optimizer_tensors.items()}
    ema = None
    if trainer.ema is not None:
        ema = {name: context.full_tensor(value) for name, value in trainer.ema.shadow.items()}
    rng = context.gather_rng(rng_state(context.rank))
    if not context.is_main:
        return None
    dumped = config.model_dump(mode="json")
    kind = "adapter" if config.mode == "lora" else "model"
    metadata = {"format": "pusa-fw-lora" if kind == "adapter" else "pusa-fw-model", "step": str(trainer.step)}
    if kind == "adapter":
        metadata.update(
            rank=str(config.lora.rank),
            alpha=str(config.lora.alpha),
            targets=json.dumps(trainer.targets),
            ptss=json.dumps(dumped["ptss"]),
        )
    return CheckpointFiles(
        weights=weights,
        weights_kind=kind,
        weights_metadata=metadata,
        ema=ema,
        optimizer_tensors=optimizer_tensors,
        optimizer_json=optimizer_json,
        rng=rng,
        trainer_state={
            "step": trainer.step,
            "epoch": trainer.position.epoch,
            "batch": trainer.position.batch,
            "world_size": context.world_size,
            "seed": config.seed,
        },
        config=dumped,
    )


def restore(trainer: Trainer, directory: Path) -> None:
    """Load checkpoint `directory` into a trainer built from the same config.

    Raises:
        CheckpointError: an incomplete checkpoint, another world size, or tensors of another run.
    """
    saved = read_checkpoint(directory)
    state = saved.trainer_state
    context = trainer.context
    if state.get("world_size", 1) != context.world_size:
        raise CheckpointError(
            f"checkpoint {directory} was written by {state.get('world_size')} ranks, this run has "
            f"{context.world_size}; resume with the same number of processes"
        )
    with torch.no_grad():
        for name, tensor in trainer.tensors.items():
            if name not in saved.weights:
                raise CheckpointError(
                    f"checkpoint {directory} has no tensor {name!r}; it is from another run"
                )
            context.load_tensor(tensor, saved.weights[name])
    if context.inner is not None and context.inner.strategy == "fsdp":
        _load_sharded_optimizer_state(trainer, saved)
    else:
        load_optimizer_state(trainer.optimizer, trainer.names, saved.optimizer_tensors, saved.optimizer_json)
    if trainer.ema is not None and saved.ema is not None:
        trainer.ema.load(saved.ema, context.load_tensor)
    set_rng_state(saved.rng, context.rank)
    trainer.step = int(state["step"])
    trainer.position = OrderPosition(epoch=int(state["epoch"]), batch=int(state["batch"]))
    if context.is_main:
        _truncate_log(trainer.run_dir / "log.jsonl", trainer.step)


def _load_sharded_optimizer_state(trainer: Trainer, saved: CheckpointFiles) -> None:
    """FSDP2: hand the full AdamW state, keyed by parameter path, to torch's sharding-aware loader."""
    from .state_dicts import load_full_optimizer_state

    if list(saved.optimizer_json["param_names"]) != list(trainer.names):
        raise CheckpointError("the checkpoint's optimizer holds other parameters than this run trains")
    paths = [path for path, parameter in trainer.model.named_parameters() if parameter.requires_grad]
    by_name = dict(zip(trainer.names, paths, strict=True))
    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in saved.optimizer_tensors.items():
        name, _, slot = key.rpartition(".")
        state.setdefault(by_name[name], {})[slot] = value
    groups = [
        {**group, "betas": tuple(group["betas"]), "params": paths} for group in saved.optimizer_json["param_groups"]
    ]
    load_full_optimizer_state(trainer.model, trainer.optimizer, {"state": state, "param_groups": groups})


def _truncate_log(path: Path, step: int) -> None:
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())
