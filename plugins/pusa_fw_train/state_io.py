"""Optimizer, RNG and EMA state as plain tensors and JSON (checkpoints never use pickle).

The optimizer's per-parameter state (AdamW: ``step``, ``exp_avg``, ``exp_avg_sq``) is stored under
``<parameter name>.<key>``; its param groups (lr, betas, ...) and the parameter order go to JSON. Loading
rebuilds torch's own ``state_dict`` layout and hands it to ``optimizer.load_state_dict``, so every value is
restored bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from pusa_fw.errors import CheckpointError

__all__ = [
    "EMA",
    "load_optimizer_state",
    "optimizer_groups",
    "optimizer_state_tensors",
    "rng_state",
    "set_rng_state",
]


def optimizer_groups(optimizer: torch.optim.Optimizer, names: Sequence[str]) -> dict[str, Any]:
    """The JSON part of an optimizer's state: its param groups (without the params) and the parameter names."""
    groups = [{key: value for key, value in group.items() if key != "params"} for group in optimizer.param_groups]
    for group in groups:
        group["betas"] = list(group.get("betas", ()))
    return {"param_names": list(names), "param_groups": groups}


def optimizer_state_tensors(
    optimizer: torch.optim.Optimizer,
    names: Sequence[str],
    to_full: Callable[[torch.Tensor], torch.Tensor | None] = lambda t: t.detach().to("cpu", copy=True),
) -> tuple[dict[str, torch.Tensor | None], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors keyed by parameter name and a JSON part.

    Args:
        optimizer: built over the parameters of `names`, in that order, in one param group.
        names: the contract name of each parameter, in optimizer order.
        to_full: a whole CPU copy of one state tensor; a sharded (DTensor) moment must be gathered on its
            device before it moves to the CPU (`ParallelContext.full_tensor`), since NCCL gathers only
            device tensors. It may return None on ranks that keep no copy (all but rank 0).
    """
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor | None] = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            tensors[f"{names[index]}.{key}"] = to_full(torch.as_tensor(value))
    groups = [
        {key: value for key, value in group.items() if key != "params"} for group in state["param_groups"]
    ]
    for group in groups:
        group["betas"] = list(group.get("betas", ()))
    return tensors, {"param_names": list(names), "param_groups": groups}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer,
    names: Sequence[str],
    tensors: dict[str, torch.Tensor],
    saved: dict[str, Any],
) -> None:
    """Restore what `optimizer_state_tensors` saved.

    Raises:
        CheckpointError: the saved parameters are not the ones being trained.
    """
    if list(saved["param_names"]) != list(names):
        missing = sorted(set(names) - set(saved["param_names"]))[:3]
        extra = sorted(set(saved["param_names"]) - set(names))[:3]
        raise CheckpointError(
            f"the checkpoint's optimizer holds other parameters than this run trains (missing {missing}, "
            f"extra {extra}); resume with the config the run was started with"
        )
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, slot = key.rpartition(".")
        per_param.setdefault(list(names).index(name), {})[slot] = value
    template = optimizer.state_dict()
    groups = []
    for group, stored in zip(template["param_groups"], saved["param_groups"], strict=True):
        restored = dict(stored)
        restored["betas"] = tuple(restored["betas"])
        restored["params"] = group["params"]
        groups.append(restored)
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})


def rng_state(rank: int) -> dict[str, torch.Tensor]:
    """This rank's torch RNG states (CPU, and the current CUDA device when there is one)."""
    states = {f"rank{rank}.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states[f"rank{rank}.cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_state(states: dict[str, torch.Tensor], rank: int) -> None:
    """Restore `rng_state` (a rank missing from the checkpoint keeps its own seeded state)."""
    if f"rank{rank}.torch" in states:
        torch.set_rng_state(states[f"rank{rank}.torch"])
    if f"rank{rank}.cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states[f"rank{rank}.cuda"])


class EMA:
    """Exponential moving average of the trained tensors, kept in fp32: ``ema += (1 - decay) (p - ema)``.

    For a LoRA run this is the EMA of the factors A and B *separately* (factor EMA), not of the merged
    delta ``B @ A``: the product of averages is not the average of products. A merged-delta EMA would keep
    one ``[out, in]`` tensor per adapted Linear (the size of the base weights), which a LoRA run exists to
    avoid. Measured on the tiny test run (30 steps): ``||EMA(B) EMA(A) - EMA(B A)|| / ||EMA(B A)||`` is
    0.042 at decay 0.9 and 0.32 at decay 0.99 in fp32 (pinned by ``tests/train/test_train_ema.py``).
    """

    def __init__(self, tensors: dict[str, nn.Parameter], decay: float) -> None:
        self.decay = decay
        self.shadow = {name: parameter.detach().float().clone() for name, parameter in tensors.items()}

    @torch.no_grad()
    def update(self, tensors: dict[str, nn.Parameter]) -> None:
        for name, parameter in tensors.items():
            self.shadow[name].lerp_(parameter.detach().float(), 1.0 - self.decay)

    def load(self, saved: dict[str, torch.Tensor], copy: Callable[[torch.Tensor, torch.Tensor], None]) -> None:
        """Copy saved full tensors into the shadow with `copy(target, value)` (sharding-aware)."""
        if set(saved) != set(self.shadow):
            raise CheckpointError("the checkpoint's EMA holds other tensors than this run trains")
        for name, value in saved.items():
            copy(self.shadow[name], value)
