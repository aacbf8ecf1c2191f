"""A run's whole state: what goes into a checkpoint and how it comes back (behind `Trainer.state_dict`).

`collect_state` gathers the trained tensors, the AdamW state, the EMA, every rank's RNG states, the step and
the position in the data order into `CheckpointFiles`; `apply_state` puts them back into the freshly built
parts of a run of the same config, which then continues exactly where the saved one was. The functions take
the parts explicitly (no trainer object), so this module and `pusa_fw_train.trainer` do not import each
other. `truncate_log` drops metric records past the restored step from ``log.jsonl``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from pusa_fw.errors import CheckpointError
from pusa_fw.io.atomic import atomic_write_bytes

from .checkpoint import CheckpointFiles, latest_checkpoint
from .config import TrainConfig, config_differences, validate_train_config
from .order import OrderPosition
from .parallel import ParallelContext
from .state_io import (
    EMA,
    load_optimizer_state,
    optimizer_groups,
    optimizer_state_tensors,
    rng_state,
    set_rng_state,
)

__all__ = ["apply_state", "check_resume_config", "collect_state", "find_checkpoint", "truncate_log"]


def find_checkpoint(given: Path) -> Path:
    """`given` itself when it is a checkpoint directory, else the run's ``checkpoints/latest``."""
    if (given / "manifest.json").exists() or given.name.startswith("step-"):
        return given
    return latest_checkpoint(given)


def check_resume_config(directory: Path, config: TrainConfig | None) -> TrainConfig:
    """The config to resume checkpoint `directory` with: `config` (default: the saved one) where allowed.

    The run continues in the run directory that holds the checkpoint (``output_dir`` becomes it, so a run
    directory moved or copied to another machine keeps writing where it is now). A changed ``max_steps``
    keeps the learning-rate law's span: ``optimizer.decay_steps`` is fixed to the run's span, so the
    learning rate does not jump; past the span it stays at the cosine floor.

    Raises:
        CheckpointError: one line listing every setting that differs.
    """
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"checkpoint {str(directory)!r} has no config.json; it is incomplete")
    saved = validate_train_config(json.loads(config_file.read_text(encoding="utf-8")))
    given = saved if config is None else config
    span = saved.optimizer.decay_steps
    if given.optimizer.decay_steps is None and (span or given.max_steps != saved.max_steps):
        saved, given = (_with_span(one, span or saved.max_steps) for one in (saved, given))
    differences = config_differences(saved, given)
    if differences:
        raise CheckpointError(f"the config differs from the run's in {directory}: " + "; ".join(differences))
    return given.model_copy(update={"output_dir": str(directory.parent.parent)})


def _with_span(config: TrainConfig, span: int) -> TrainConfig:
    return config.model_copy(update={"optimizer": config.optimizer.model_copy(update={"decay_steps": span})})


def collect_state(
    *,
    context: ParallelContext,
    config: TrainConfig,
    step: int,
    position: OrderPosition,
    tensors: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    ema: EMA | None,
    targets: list[str],
    sharded: bool = False,
) -> CheckpointFiles | None:
    """A run's state as checkpoint content: on rank 0; None on the others (every rank must call it).

    Sharded tensors are gathered on their device first on every rank (``full_tensor``, a collective), then
    copied to the CPU on rank 0 only (the other ranks get None and keep nothing); with `sharded` they are
    not gathered at all (every rank has written its DCP shards, `sharded.save_sharded`).
    """
    names = list(tensors)
    if sharded:
        weights, optimizer_tensors, shadow = {}, {}, None
        optimizer_json = optimizer_groups(optimizer, names)
    else:
        weights = {name: context.full_tensor(tensor) for name, tensor in tensors.items()}
        optimizer_tensors, optimizer_json = optimizer_state_tensors(optimizer, names, context.full_tensor)
        shadow = None if ema is None else {name: context.full_tensor(v) for name, v in ema.shadow.items()}
    rng = context.gather_rng(rng_state(context.rank))
    if not context.is_main:
        return None
    dumped = config.model_dump(mode="json")
    kind = "adapter" if config.mode == "lora" else "model"
    metadata = {"format": "pusa-fw-lora" if kind == "adapter" else "pusa-fw-model", "step": str(step)}
    if kind == "adapter":
        metadata.update(
            rank=str(config.lora.rank),
            alpha=str(config.lora.alpha),
            targets=json.dumps(targets),
            ptss=json.dumps(dumped["ptss"]),
        )
    return CheckpointFiles(
        weights=weights,
        weights_kind=kind,
        weights_metadata=metadata,
        ema=shadow,
        optimizer_tensors=optimizer_tensors,
        optimizer_json=optimizer_json,
        rng=rng,
        trainer_state={
            "step": step,
            "epoch": position.epoch,
            "batch": position.batch,
            "world_size": context.world_size,
            "seed": config.seed,
            "weights_kind": kind,
            **({"weights_metadata": metadata} if sharded else {}),
        },
        config=dumped,
        sharded=sharded,
    )


def apply_state(
    saved: CheckpointFiles,
    *,
    context: ParallelContext,
    model: nn.Module,
    tensors: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    ema: EMA | None,
) -> tuple[int, OrderPosition]:
    """Load checkpoint content into the parts of a run built from the same config.

    Returns:
        The step and the data-order position to continue from.

    The checkpoint may come from another world size: its tensors are whole, the data order and the keyed
    draws do not depend on the ranks, and a rank without saved RNG states keeps its own seeded ones.

    Raises:
        CheckpointError: tensors of another run.
    """
    state = saved.trainer_state
    names = list(tensors)
    if saved.sharded:
        from .sharded import load_sharded

        assert saved.directory is not None
        load_sharded(saved.directory, model, tensors, optimizer, ema)
        set_rng_state(saved.rng, context.rank)
        return int(state["step"]), OrderPosition(epoch=int(state["epoch"]), batch=int(state["batch"]))
    with torch.no_grad():
        for name, tensor in tensors.items():
            if name not in saved.weights:
                raise CheckpointError(f"the checkpoint has no tensor {name!r}; it is from another run")
            context.load_tensor(tensor, saved.weights[name])
    if context.strategy == "fsdp" and context.is_distributed:
        _load_sharded_optimizer_state(model, optimizer, names, saved)
    else:
        load_optimizer_state(optimizer, names, saved.optimizer_tensors, saved.optimizer_json)
    if ema is not None and saved.ema is not None:
        ema.load(saved.ema, context.load_tensor)
    set_rng_state(saved.rng, context.rank)
    return int(state["step"]), OrderPosition(epoch=int(state["epoch"]), batch=int(state["batch"]))


def _load_sharded_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, names: list[str], saved: CheckpointFiles
) -> None:
    """FSDP2: hand the full AdamW state, keyed by parameter path, to torch's sharding-aware loader."""
    from .state_dicts import load_full_optimizer_state

    if list(saved.optimizer_json["param_names"]) != list(names):
        raise CheckpointError("the checkpoint's optimizer holds other parameters than this run trains")
    paths = [path for path, parameter in model.named_parameters() if parameter.requires_grad]
    by_name = dict(zip(names, paths, strict=True))
    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in saved.optimizer_tensors.items():
        name, _, slot = key.rpartition(".")
        state.setdefault(by_name[name], {})[slot] = value
    groups = [
        {**group, "betas": tuple(group["betas"]), "params": paths} for group in saved.optimizer_json["param_groups"]
    ]
    load_full_optimizer_state(model, optimizer, {"state": state, "param_groups": groups})


def truncate_log(path: Path, step: int) -> None:
    """Drop metric records past `step` (written by a run that went on after its last checkpoint)."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())
