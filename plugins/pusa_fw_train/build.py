"""Building what a run trains from its config: the backbone's model (through its training adapter, from a
checkpoint or a random init) with LoRA or unfrozen, the AdamW optimizer, and the learning-rate law."""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from pusa_fw.errors import InputError

from .adapter import TrainAdapter
from .config import OptimizerSection, TrainConfig
from .lora import inject_lora, load_lora_into, trainable_tensors
from .memory import build_base, resolve_gradient_checkpointing

__all__ = ["build_model", "build_optimizer", "learning_rate", "set_up_trainable"]


def build_model(
    config: TrainConfig, adapter: TrainAdapter, device: torch.device | str = "cpu"
) -> tuple[nn.Module, list[str]]:
    """The model of `config` (built by the backbone's `adapter`), trainable tensors set up.

    The frozen base is stored in the run's ``weights_dtype`` (`pusa_fw_train.memory`) and, when the
    adapter can, streamed from its checkpoint straight onto `device` (see `build_base`); the LoRA factors
    are float32.

    Returns:
        The model and the LoRA target module paths (empty for a full fine-tune).

    Raises:
        InputError: gradient checkpointing asked of a model that cannot do it.
    """
    model = build_base(config, adapter, device)
    return model, set_up_trainable(model, config, adapter)


def set_up_trainable(model: nn.Module, config: TrainConfig, adapter: TrainAdapter) -> list[str]:
    """Inject the run's LoRA (seeded by ``config.seed``) or unfreeze every weight; set gradient checkpointing
    and train mode. Returns the LoRA target module paths (empty for a full fine-tune).

    Raises:
        InputError: gradient checkpointing or ``token_chunks`` asked of a model that cannot do it.
    """
    targets: list[str] = []
    if config.mode == "lora":
        torch.manual_seed(config.seed)  # the LoRA A init draws from the global generator
        suffixes = config.lora.targets if config.lora.targets is not None else adapter.default_lora_targets
        targets = inject_lora(model, tuple(suffixes), config.lora.rank, config.lora.alpha)
        if config.lora.init_from is not None:
            load_lora_into(
                model,
                adapter.read_lora(config.lora.init_from),
                rank=config.lora.rank,
                alpha=config.lora.alpha,
                source=config.lora.init_from,
            )
    else:
        model.requires_grad_(True)
    checkpointing = getattr(model, "enable_gradient_checkpointing", None)
    wanted = resolve_gradient_checkpointing(config, can=checkpointing is not None)
    if checkpointing is not None and config.token_chunks > 1:
        if "token_chunks" not in inspect.signature(checkpointing).parameters:
            raise InputError(
                f"token_chunks = {config.token_chunks} but the {config.model.backbone!r} model's "
                "enable_gradient_checkpointing takes no token_chunks; set token_chunks = 1"
            )
        checkpointing(wanted, token_chunks=config.token_chunks)
    elif checkpointing is not None:
        checkpointing(wanted)
    elif wanted:
        raise InputError(
            f"gradient_checkpointing is on but the {config.model.backbone!r} model has no "
            "enable_gradient_checkpointing; turn it off"
        )
    model.train()  # a loaded checkpoint comes in eval mode; train mode takes the lean training forward
    return targets


def build_optimizer(model: nn.Module, section: OptimizerSection) -> tuple[torch.optim.Optimizer, list[str]]:
    """AdamW over the trainable tensors (one group); returns it and the tensors' contract names in order."""
    tensors = trainable_tensors(model)
    names = list(tensors)
    optimizer = torch.optim.AdamW(
        list(tensors.values()),
        lr=section.lr,
        betas=section.betas,
        eps=section.eps,
        weight_decay=section.weight_decay,
    )
    return optimizer, names


def learning_rate(section: OptimizerSection, step: int, total_steps: int) -> float:
    """The learning rate of optimizer step `step` (0-based): linear warmup, then constant or cosine.

    Warmup rises as ``lr * (step + 1) / warmup_steps``; cosine then decays from ``lr`` to
    ``lr * min_lr_ratio`` at ``section.decay_steps`` (default `total_steps`, the run's ``max_steps``).
    """
    total_steps = section.decay_steps if section.decay_steps is not None else total_steps
    if step < section.warmup_steps:
        return section.lr * (step + 1) / section.warmup_steps
    if section.schedule == "constant":
        return section.lr
    span = max(total_steps - section.warmup_steps, 1)
    progress = min((step - section.warmup_steps) / span, 1.0)
    floor = section.lr * section.min_lr_ratio
    return floor + (section.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
