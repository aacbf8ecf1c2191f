"""The flow-matching shift of sigma levels and the official discrete training grid (used by PTSS and FAFM)."""

from __future__ import annotations

import torch

from .errors import InputError

__all__ = ["shift_sigmas", "training_sigma_grid", "unshift_sigmas"]


def shift_sigmas(u: torch.Tensor, shift: float) -> torch.Tensor:
    """Map unshifted levels `u` in [0, 1] through the flow-matching shift.

    `sigma = shift * u / (1 + (shift - 1) * u)`; shift 1 is the identity, shift > 1 pushes sigmas
    towards 1 (more noise). The map is increasing and fixes 0 and 1. It is evaluated as the equal
    `u / (u + (1 - u) / shift)`, whose rounding can never leave [0, 1] (the textbook form gives
    1 + 2e-16 at u = 1 for some shifts).

    Args:
        u: tensor of any shape with values in [0, 1].
        shift: the shift, > 0.

    Returns:
        Tensor of the shape and dtype of `u`.
    """
    return u / (u + (1.0 - u) / shift)


def unshift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """Inverse of `shift_sigmas`: `u = sigma / (shift - (shift - 1) * sigma)`.

    Args:
        sigmas: tensor of any shape with values in [0, 1].
        shift: the shift, > 0.

    Returns:
        Tensor of the shape and dtype of `sigmas`.
    """
    return sigmas / (shift - (shift - 1.0) * sigmas)


def training_sigma_grid(num_train_steps: int, shift: float) -> torch.Tensor:
    """The discrete training grid of the official trainer, as sigmas.

    `u = linspace(1, 0, N + 1)[:-1]` (i.e. `u_k = 1 - k / N`, k = 0..N-1), shifted. Index 0 is pure
    noise (sigma 1); sigma 0 is never part of the grid.

    Args:
        num_train_steps: N, the number of grid points (the official trainer uses 1000).
        shift: the shift, > 0 (the official trainer uses 5).

    Returns:
        `[N]` float64 sigmas, strictly decreasing from 1.
    """
    if isinstance(num_train_steps, bool) or not isinstance(num_train_steps, int) or num_train_steps < 1:
        raise InputError(f"num_train_steps must be an int >= 1, got {num_train_steps!r}; use e.g. 1000.")
    if not shift > 0:
        raise InputError(f"shift must be > 0, got {shift!r}; use e.g. 5.0.")
    steps = torch.arange(num_train_steps, dtype=torch.float64)
    u = 1.0 - steps / num_train_steps
    return shift_sigmas(u, shift)
