"""Keyed per-frame noise for sampler rules that draw fresh noise (``lcm``).

A rule that re-noises cannot take its noise from one running generator: which frames move at which
step depends on the plan's windows, so a sequential stream would hand a frame different noise when the
same schedule is laid out in other windows, and a step of one window would shift the noise of every
later one. Here every draw is keyed instead: the noise of one frame's ``k``-th update is a standard
normal `[B, C, H, W]` drawn in float32 on the CPU from its own generator, seeded by a hash of
``(key, timeline frame, k)``. The ``key`` comes once per sample from the loop's generator, so a seed
gives the same noise on every device and for every window layout, and two seeds give independent noise.

The sampling loop hands the key to any rule that derives from `KeyedNoiseRule`
(``state = rule.with_noise_key(state, draw_noise_key(generator))`` right after ``rule.start``).
"""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from typing import Any

import torch

from .base import SamplerRule

KEY_BITS = 62
"""Keys are drawn in ``[0, 2**62)``."""


def draw_noise_key(generator: torch.Generator) -> int:
    """One key for a sample's keyed draws, taken from the loop's CPU `generator` (one draw)."""
    return int(torch.randint(0, 2**KEY_BITS, (1,), generator=generator, dtype=torch.int64))


def frame_seed(key: int, frame: int, update: int) -> int:
    """The 63-bit seed of frame `frame`'s `update`-th draw under `key` (blake2b of the three numbers)."""
    text = f"pusa-fw-keyed-noise:{key}:{frame}:{update}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") >> 1


def keyed_frame_noise(
    key: int,
    frames: list[int],
    updates: list[int],
    shape: tuple[int, int, int, int],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise `[B, C, len(frames), H, W]`, frame ``j`` keyed by ``(key, frames[j], updates[j])``.

    Args:
        key: the sample's key (`draw_noise_key`).
        frames: timeline indices of the frames, in window order.
        updates: for each frame, how many updates it had before this one (its draw index).
        shape: ``(B, C, H, W)`` of one frame.
        device: where the noise goes (it is always drawn on the CPU in float32).
        dtype: its dtype after drawing.
    """
    if len(frames) != len(updates):
        raise ValueError(f"{len(frames)} frames but {len(updates)} update counts")
    parts = []
    for frame, update in zip(frames, updates):
        generator = torch.Generator(device="cpu").manual_seed(frame_seed(key, frame, update))
        parts.append(torch.randn(shape, generator=generator, dtype=torch.float32))
    noise = torch.stack(parts, dim=2)
    return noise.to(device=device, dtype=dtype)


class KeyedNoiseRule(SamplerRule):
    """A sampler rule whose state carries a noise key; the loop sets it from its generator after `start`."""

    @abstractmethod
    def with_noise_key(self, state: Any, key: int) -> Any:
        """`state` with the sample's noise `key` set (returned; may be updated in place)."""
