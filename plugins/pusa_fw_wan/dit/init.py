"""Random initialisation of a Wan module from a seed, for runs that start from scratch (toy models, tests).

Every parameter gets a random non-zero value: weights N(0, 1/fan_in), biases N(0, 0.05^2), norm gains
1 + N(0, 0.1^2) and modulation tables N(0, 1/dim). Nothing is zero-initialised, so every input changes the
output; the same generator state gives the same weights on every machine (drawn on the CPU in float32,
then cast to each parameter's dtype).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["init_from_seed"]


def init_from_seed(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Fill every parameter of `model` in place from `generator` (a CPU generator) and return `model`."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            shape = parameter.shape
            if name.endswith("bias"):
                values = 0.05 * torch.randn(shape, generator=generator)
            elif "norm" in name or name.endswith("gamma"):
                values = 1.0 + 0.1 * torch.randn(shape, generator=generator)
            elif name.endswith("modulation"):
                values = torch.randn(shape, generator=generator) / shape[-1] ** 0.5
            else:
                fan_in = parameter[0].numel() if parameter.ndim > 1 else parameter.numel()
                values = torch.randn(shape, generator=generator) / max(fan_in, 1) ** 0.5
            parameter.copy_(values.to(parameter.dtype))
    return model
