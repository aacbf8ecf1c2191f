"""What a run trains: LoRA factors injected through peft, or every weight of the model.

Trainable tensors are named as in the checkpoint contract: ``<module>.lora_A.weight`` `[r, in]` and
``<module>.lora_B.weight`` `[out, r]` for a LoRA (the peft adapter name is dropped), or the plain
state-dict names of the model for a full fine-tune. `trainable_tensors` gives that mapping for any run.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from pusa_fw.errors import CheckpointError, InputError

__all__ = ["ADAPTER_NAME", "inject_lora", "load_lora_into", "resolve_targets", "trainable_tensors"]

ADAPTER_NAME = "trained"
_PEFT_KEY = re.compile(rf"\.(lora_[AB])\.{ADAPTER_NAME}\.weight$")


def resolve_targets(model: nn.Module, suffixes: tuple[str, ...]) -> list[str]:
    """Paths of the Linear modules whose names end with one of `suffixes` (``"q"``, ``"ffn.0"``, ...).

    Raises:
        InputError: a suffix that matches no Linear.
    """
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    targets = []
    for suffix in suffixes:
        matched = [name for name in linears if name == suffix or name.endswith("." + suffix)]
        if not matched:
            raise InputError(
                f"LoRA target {suffix!r} matches no Linear of the model; use name suffixes of its Linear "
                f"modules (e.g. {linears[:3]})"
            )
        targets.extend(matched)
    return sorted(set(targets))


def inject_lora(model: nn.Module, suffixes: tuple[str, ...], rank: int, alpha: float) -> list[str]:
    """Freeze `model` and inject trainable fp32 LoRA factors (peft) on the target modules.

    A is initialised Kaiming-uniform and B to zero (peft's default), so the model starts as the base.

    Returns:
        The sorted target module paths.
    """
    from peft import LoraConfig, inject_adapter_in_model

    targets = resolve_targets(model, suffixes)
    model.requires_grad_(False)
    config = LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, init_lora_weights=True
    )
    inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    for name, parameter in model.named_parameters():
        if f".{ADAPTER_NAME}." in name:
            parameter.data = parameter.data.float()
            parameter.requires_grad_(True)
    return targets


def trainable_tensors(model: nn.Module) -> dict[str, nn.Parameter]:
    """Contract names -> the trainable parameters (LoRA factors, or every parameter of a full run)."""
    named = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        named[_PEFT_KEY.sub(r".\1.weight", name)] = parameter
    return named


@torch.no_grad()
def load_lora_into(
    model: nn.Module, pairs: dict[str, tuple[torch.Tensor, torch.Tensor, float]], *, rank: int, alpha: float,
    source: str,
) -> int:
    """Copy the LoRA pairs of an existing file (read by the backbone adapter's ``read_lora``) into the factors.

    The file's scale is folded into B so that the model computes the file's LoRA exactly under this run's
    alpha / rank.

    Args:
        model: the model with LoRA injected (`inject_lora`).
        pairs: module path -> ``(down [r, in], up [out, r], scale)``.
        rank: this run's ``lora.rank``.
        alpha: this run's ``lora.alpha``.
        source: the file, for messages.

    Returns:
        The number of modules loaded.

    Raises:
        CheckpointError: a module the run does not train, or a rank that differs from this run's.
    """
    tensors = trainable_tensors(model)
    for module, (down, up, scale) in pairs.items():
        down_key, up_key = f"{module}.lora_A.weight", f"{module}.lora_B.weight"
        if down_key not in tensors:
            raise CheckpointError(
                f"{source}: LoRA module {module!r} is not a target of this run; add it to lora.targets"
            )
        if down.shape[0] != rank:
            raise CheckpointError(
                f"{source}: module {module!r} has rank {down.shape[0]}, the run has lora.rank={rank}"
            )
        factor = scale / (alpha / rank)
        if not math.isfinite(factor):
            raise CheckpointError(f"{source}: module {module!r} has a non-finite scale")
        tensors[down_key].copy_(down.float())
        tensors[up_key].copy_(up.float() * factor)
    if not pairs:
        raise CheckpointError(f"{source}: no LoRA pair found to continue from")
    return len(pairs)
