"""Stand-in: device, model loading and the interrupt flag."""

from __future__ import annotations

from typing import Any

import torch

loaded: list[tuple[Any, int]] = []
minimums: list[int | None] = []
interrupt_after_steps: int | None = None
_checks = 0


class InterruptProcessingException(Exception):
    pass


def get_torch_device() -> torch.device:
    return torch.device("cpu")


def load_models_gpu(models: list[Any], memory_required: int = 0, minimum_memory_required: int | None = None) -> None:
    loaded.extend((model, memory_required) for model in models)
    minimums.append(minimum_memory_required)


def dtype_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def throw_exception_if_processing_interrupted() -> None:
    global _checks
    _checks += 1
    if interrupt_after_steps is not None and _checks >= interrupt_after_steps:
        raise InterruptProcessingException()


def reset() -> None:
    global interrupt_after_steps, _checks
    loaded.clear()
    minimums.clear()
    interrupt_after_steps, _checks = None, 0
