"""Noise from a CPU `torch.Generator`, so a seed gives the same latents on every device."""

from __future__ import annotations

import operator

import torch

from .errors import InputError


MAX_SEED = 2**64 - 1
"""The largest seed a torch generator takes (seeds are unsigned 64-bit integers)."""


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed`.

    Raises:
        InputError: `seed` is not an integer in ``[0, MAX_SEED]``.
    """
    try:
        value = None if isinstance(seed, bool) else operator.index(seed)
    except TypeError:
        value = None
    if value is None or not 0 <= value <= MAX_SEED:
        raise InputError(f"seed={seed!r} must be an integer in [0, 2**64 - 1]; e.g. seed=0")
    generator = torch.Generator(device="cpu")
    generator.manual_seed(value)
    return generator


def draw_noise(
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | int,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise drawn in float32 on the CPU from `generator` (or a seed), then moved.

    Args:
        shape: e.g. `[B, C, F, H, W]`.
        generator: a CPU generator or an integer seed.
        device: where the noise goes.
        dtype: its dtype after drawing.
    """
    if isinstance(generator, int):
        generator = make_generator(generator)
    noise = torch.randn(tuple(shape), generator=generator, dtype=torch.float32, device="cpu")
    return noise.to(device=device, dtype=dtype)
