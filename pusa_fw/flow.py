"""Flow-matching maths in the one convention pusa-fw uses.

``x_sigma = (1 - sigma) * x0 + sigma * eps``, sigma in [0, 1] (1 = noise), velocity ``v = eps - x0``.
(The flow_matching library counts time the other way, t = 1 - sigma; nothing here uses that.)
"""

from __future__ import annotations

import torch

SIGMA_DTYPE = torch.float64
"""The dtype of schedule grids and plans. Plans are tiny, and float64 keeps `1000 * sigma` equal to Wan's
timestep: a float32 sigma is up to ~3e-5 off on the 0..1000 scale, worth ~1e-5 at the DiT output."""


def frame_view(values: torch.Tensor) -> torch.Tensor:
    """Shape per-frame values `[F]` or `[B, F]` for broadcasting against latents `[B, C, F, H, W]`."""
    if values.dim() == 1:
        return values.view(1, 1, -1, 1, 1)
    return values.view(values.shape[0], 1, values.shape[1], 1, 1)


def interpolate(x0: torch.Tensor, eps: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """The point on the straight path at per-frame level `sigmas`.

    Args:
        x0: `[B, C, F, H, W]` clean latents.
        eps: `[B, C, F, H, W]` noise.
        sigmas: `[F]` or `[B, F]` levels.

    Returns:
        `[B, C, F, H, W]`; frames at sigma 0 are exactly `x0`, frames at sigma 1 exactly `eps`.
    """
    s = frame_view(sigmas.to(x0.dtype))
    mixed = (1 - s) * x0 + s * eps
    mixed = torch.where(s == 0, x0, mixed)
    return torch.where(s == 1, eps, mixed)


def velocity_target(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The flow-matching target `eps - x0`."""
    return eps - x0


def denoised_from_velocity(x: torch.Tensor, velocity: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """The x0 prediction `x - sigma * v` for latents `[B, C, F, H, W]` at per-frame `sigmas`."""
    return x - frame_view(sigmas.to(x.dtype)) * velocity


def forward_noise(
    x: torch.Tensor, sigma_from: torch.Tensor, sigma_to: torch.Tensor, fresh: torch.Tensor
) -> torch.Tensor:
    """Move latents from level `sigma_from` up to `sigma_to` along the forward (noising) process.

    For ``x = (1 - a) x0 + a e1`` this returns ``(1 - b) x0 + b e`` in distribution, with
    ``x' = (1 - b) / (1 - a) * x + sqrt(b^2 - ((1 - b) a / (1 - a))^2) * fresh``. From a = 0 it is the plain
    interpolation of the clean state with `fresh`.

    Args:
        x: `[B, C, F, H, W]` latents at `sigma_from`.
        sigma_from: `[F]` current levels, each < 1 or equal to `sigma_to`.
        sigma_to: `[F]` target levels, each >= `sigma_from`.
        fresh: `[B, C, F, H, W]` standard normal noise.
    """
    a = sigma_from.to(torch.float64)
    b = sigma_to.to(torch.float64)
    keep = b <= a
    safe_a = torch.where(keep, torch.zeros_like(a), a)
    scale = (1 - b) / (1 - safe_a)
    spread = torch.sqrt(torch.clamp(b**2 - (scale * safe_a) ** 2, min=0.0))
    scale = torch.where(keep, torch.ones_like(scale), scale)
    spread = torch.where(keep, torch.zeros_like(spread), spread)
    moved = frame_view(scale.to(x.dtype)) * x + frame_view(spread.to(x.dtype)) * fresh
    return torch.where(frame_view(keep), x, moved)
