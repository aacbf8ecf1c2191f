"""Random initialisation of a Wan module from a seed, for runs that start from scratch (toy models, tests).

Every parameter gets a random non-zero value: weights N(0, 1/fan_in), biases N(0, 0.05^2), norm gains
1 + N(0, 0.1^2) and modulation tables N(0, 1/dim). Nothing is zero-initialised, so every input changes the
output; the same generator state gives the same weights on every machine (drawn on the CPU in float32,
then cast to each parameter's dtype).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["init_from_seed", "initial_value"]


def initial_value(name: str, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """The float32 CPU value of parameter `name` of `shape` from `generator` (the module docstring's laws).

    `init_from_seed` calls it for every parameter in ``named_parameters`` order; a sharded load that calls it
    in the same order gets the same values, one tensor at a time.
    """
    if name.endswith("bias"):
        return 0.05 * torch.randn(shape, generator=generator)
    if "norm" in name or name.endswith("gamma"):
        return 1.0 + 0.1 * torch.randn(shape, generator=generator)
    if name.endswith("modulation"):
        return torch.randn(shape, generator=generator) / shape[-1] ** 0.5
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else math.prod(shape)
    return torch.randn(shape, generator=generator) / max(fan_in, 1) ** 0.5


def init_from_seed(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Fill every parameter of `model` in place from `generator` (a CPU generator) and return `model`."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.copy_(initial_value(name, parameter.shape, generator).to(parameter.dtype))
    return model
