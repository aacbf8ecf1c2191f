"""Seeded initialisations of a Wan DiT, for runs that start from scratch (toy models, tests).

Two laws, both drawn on the CPU in float32 from a generator (the same state gives the same weights on every
machine), then cast to each parameter's dtype:

- `init_from_seed` (tests): every parameter gets a random non-zero value: weights N(0, 1/fan_in), biases
  N(0, 0.05^2), norm gains 1 + N(0, 0.1^2) and modulation tables N(0, 1/dim). Nothing is zero, so every
  input changes the output.
- `init_wan` (training from scratch): the law of the official Wan2.1 model's own initialisation. Every
  linear weight is Xavier-uniform and every bias zero; the patch embedding's kernel is Xavier-uniform over
  its flattened ``[dim, in_dim * patch volume]`` view (its bias keeps PyTorch's default law); the text and
  time embeddings' weights are N(0, 0.02^2); modulation tables N(0, 1/dim); norm gains one; and the output
  head's weight is zero, so the untrained model predicts a zero velocity and training starts from the
  loss of the mean instead of a random function.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["init_from_seed", "init_wan", "initial_value", "wan_initial_value"]


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


def _uniform(shape: torch.Size, bound: float, generator: torch.Generator) -> torch.Tensor:
    return (2 * torch.rand(shape, generator=generator) - 1) * bound


def wan_initial_value(name: str, shape: torch.Size, generator: torch.Generator, *, patch_fan_in: int) -> torch.Tensor:
    """The float32 CPU value of WanDiT parameter `name` of `shape` under `init_wan`'s law.

    Args:
        patch_fan_in: ``in_dim * patch volume`` of the model (the patch-embedding bias's default law).
    """
    if name == "patch_embedding.bias":  # PyTorch's Conv3d default, which the official init leaves alone
        return _uniform(shape, 1 / math.sqrt(patch_fan_in), generator)
    if name.endswith("bias"):
        return torch.zeros(shape)
    if name.endswith("modulation"):
        return torch.randn(shape, generator=generator) / shape[-1] ** 0.5
    if "norm" in name:
        return torch.ones(shape)
    if name == "head.head.weight":
        return torch.zeros(shape)
    if name.startswith(("text_embedding.", "time_embedding.")):
        return 0.02 * torch.randn(shape, generator=generator)
    fan_out, fan_in = shape[0], math.prod(shape[1:])  # a linear, or the patch kernel seen flat
    return _uniform(shape, math.sqrt(6 / (fan_in + fan_out)), generator)


def init_wan(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Fill every parameter of a `WanDiT` in place with `wan_initial_value` (in ``named_parameters`` order)
    and return it."""
    patch_fan_in = math.prod(model.get_parameter("patch_embedding.weight").shape[1:])
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            value = wan_initial_value(name, parameter.shape, generator, patch_fan_in=patch_fan_in)
            parameter.copy_(value.to(parameter.dtype))
    return model
