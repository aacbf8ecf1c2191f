"""Building what a run trains from its config: the DiT (checkpoint or random init) with LoRA or unfrozen,
the AdamW optimizer, and the learning-rate law."""

from __future__ import annotations

import math

import torch
from torch import nn

from .adapters import inject_lora, load_lora_into, trainable_tensors
from .config import OptimizerSection, TrainConfig

__all__ = ["build_model", "build_optimizer", "learning_rate"]


def build_model(config: TrainConfig) -> tuple[nn.Module, list[str]]:
    """The DiT of `config` on the CPU in fp32, with its trainable tensors set up.

    Returns:
        The model and the LoRA target module paths (empty for a full fine-tune).
    """
    from pusa_fw_wan.dit.config import WanConfig
    from pusa_fw_wan.dit.model import WanDiT
    from pusa_fw_wan.testing.tiny import randomise_parameters

    if config.model.path is not None:
        model = WanDiT.from_pretrained(config.model.path, dtype=torch.float32)
    else:
        model = WanDiT(WanConfig(**config.model.architecture))
        randomise_parameters(model, torch.Generator().manual_seed(config.model.init_seed))
    targets: list[str] = []
    if config.mode == "lora":
        torch.manual_seed(config.seed)  # the LoRA A init draws from the global generator
        targets = inject_lora(model, config.lora.targets, config.lora.rank, config.lora.alpha)
        if config.lora.init_from is not None:
            load_lora_into(model, config.lora.init_from, config.lora.rank, config.lora.alpha)
    else:
        model.requires_grad_(True)
    model.enable_gradient_checkpointing(config.gradient_checkpointing)
    model.train()  # a loaded checkpoint comes in eval mode; train mode takes the lean training forward
    return model, targets


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
    ``lr * min_lr_ratio`` at ``total_steps``.
    """
    if step < section.warmup_steps:
        return section.lr * (step + 1) / section.warmup_steps
    if section.schedule == "constant":
        return section.lr
    span = max(total_steps - section.warmup_steps, 1)
    progress = min((step - section.warmup_steps) / span, 1.0)
    floor = section.lr * section.min_lr_ratio
    return floor + (section.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
