"""What a run trains: LoRA factors injected through peft, or every weight of the DiT.

Trainable tensors are named as in the checkpoint contract: ``<wan module>.lora_A.weight`` `[r, in]` and
``<wan module>.lora_B.weight`` `[out, r]` for a LoRA (the peft adapter name is dropped), or the plain
`WanDiT` state-dict names for a full fine-tune. `trainable_tensors` gives that mapping for any run.
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
                f"LoRA target {suffix!r} matches no Linear of the DiT; use suffixes such as "
                "q, k, v, o, ffn.0, ffn.2"
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
def load_lora_into(model: nn.Module, path: str, rank: int, alpha: float) -> int:
    """Copy an existing LoRA file (any format `pusa_fw_wan.lora` reads) into the injected factors.

    The file's scale (its alpha / rank) is folded into B so that the model computes the file's LoRA
    exactly under this run's alpha / rank.

    Returns:
        The number of modules loaded.

    Raises:
        CheckpointError: a module the run does not train, or a rank that differs from this run's.
    """
    from pusa_fw_wan.lora.formats import load_lora_state

    state = load_lora_state(path)
    tensors = trainable_tensors(model)
    loaded = 0
    for module, weights in state.modules.items():
        if not weights.has_pair:
            continue
        down_key, up_key = f"{module}.lora_A.weight", f"{module}.lora_B.weight"
        if down_key not in tensors:
            raise CheckpointError(
                f"{path}: LoRA module {module!r} is not a target of this run; add it to lora.targets"
            )
        if weights.rank != rank:
            raise CheckpointError(
                f"{path}: module {module!r} has rank {weights.rank}, the run has lora.rank={rank}"
            )
        factor = weights.scale / (alpha / rank)
        if not math.isfinite(factor):
            raise CheckpointError(f"{path}: module {module!r} has a non-finite scale")
        tensors[down_key].copy_(weights.down.float())
        tensors[up_key].copy_(weights.up.float() * factor)
        loaded += 1
    if loaded == 0:
        raise CheckpointError(f"{path}: no LoRA pair found to continue from")
    return loaded
