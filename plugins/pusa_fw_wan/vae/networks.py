"""Encoder and decoder networks of the Wan2.1 VAE, laid out like the official ``Wan2.1_VAE.pth`` keys.

`VAEArchitecture` holds the constructor numbers (the released model is ``dim=96, z_dim=16``).
The networks process one time chunk per call and keep their temporal state in a `CausalCache`:
the encoder takes 1 or 4 pixel frames and returns 1 latent frame; the decoder takes 1 latent frame
and returns 1 pixel frame (first chunk) or 4.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import torch
from torch import nn

from pusa_fw_wan.vae.blocks import AttentionBlock, CausalCache, CausalConv3d, Resample, ResidualBlock, RMSNorm


@dataclass(frozen=True)
class VAEArchitecture:
    """Constructor numbers of the Wan2.1 VAE (``WanVAE_`` in the official code).

    Attributes:
        dim: base channel width (96 in the released model).
        z_dim: latent channels (16).
        dim_mult: width multipliers of the four stages.
        num_res_blocks: residual blocks per encoder stage (the decoder uses one more).
        temporal_downsample: which of the three downsampling steps also halve time.
        dropout: dropout rate inside the residual blocks (0 at inference).
    """

    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = field(default=(False, True, True))
    dropout: float = 0.0

    @property
    def temporal_upsample(self) -> tuple[bool, ...]:
        """Which decoder upsampling steps double time (the encoder's choice, reversed)."""
        return tuple(reversed(self.temporal_downsample))


def _run(layer: nn.Module, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
    """Call `layer` with the cache when it takes one (every block here except norms and activations)."""
    if isinstance(layer, (ResidualBlock, AttentionBlock, Resample, CausalConv3d)):
        return layer(x, cache)
    return layer(x)


class Encoder3d(nn.Module):
    """Pixels ``[B, 3, t, H, W]`` -> posterior parameters ``[B, 2*z_dim, t', H/8, W/8]`` for one chunk."""

    def __init__(self, arch: VAEArchitecture) -> None:
        super().__init__()
        dims = [arch.dim * m for m in (1, *arch.dim_mult)]
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        downsamples: list[nn.Module] = []
        last_stage = len(arch.dim_mult) - 1
        for stage, (in_dim, out_dim) in enumerate(pairwise(dims)):
            for _ in range(arch.num_res_blocks):
                downsamples.append(ResidualBlock(in_dim, out_dim, arch.dropout))
                in_dim = out_dim
            if stage != last_stage:
                mode = "downsample3d" if arch.temporal_downsample[stage] else "downsample2d"
                downsamples.append(Resample(out_dim, mode))
        self.downsamples = nn.Sequential(*downsamples)
        width = dims[-1]
        self.middle = nn.Sequential(
            ResidualBlock(width, width, arch.dropout),
            AttentionBlock(width),
            ResidualBlock(width, width, arch.dropout),
        )
        self.head = nn.Sequential(
            RMSNorm(width, images=False), nn.SiLU(), CausalConv3d(width, arch.z_dim * 2, 3, padding=1)
        )

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """Encode one chunk of 1 (first chunk) or 4 frames into one latent frame."""
        x = self.conv1(x, cache)
        for layer in (*self.downsamples, *self.middle, *self.head):
            x = _run(layer, x, cache)
        return x


class Decoder3d(nn.Module):
    """Latents ``[B, z_dim, t, h, w]`` -> pixels ``[B, 3, t', 8h, 8w]`` for one chunk."""

    def __init__(self, arch: VAEArchitecture) -> None:
        super().__init__()
        dims = [arch.dim * m for m in (arch.dim_mult[-1], *reversed(arch.dim_mult))]
        self.conv1 = CausalConv3d(arch.z_dim, dims[0], 3, padding=1)
        self.middle = nn.Sequential(
            ResidualBlock(dims[0], dims[0], arch.dropout),
            AttentionBlock(dims[0]),
            ResidualBlock(dims[0], dims[0], arch.dropout),
        )
        upsamples: list[nn.Module] = []
        last_stage = len(arch.dim_mult) - 1
        for stage, (in_dim, out_dim) in enumerate(pairwise(dims)):
            if stage > 0:
                in_dim //= 2  # the previous upsampling halved the channels
            for _ in range(arch.num_res_blocks + 1):
                upsamples.append(ResidualBlock(in_dim, out_dim, arch.dropout))
                in_dim = out_dim
            if stage != last_stage:
                mode = "upsample3d" if arch.temporal_upsample[stage] else "upsample2d"
                upsamples.append(Resample(out_dim, mode))
        self.upsamples = nn.Sequential(*upsamples)
        width = dims[-1]
        self.head = nn.Sequential(
            RMSNorm(width, images=False), nn.SiLU(), CausalConv3d(width, 3, 3, padding=1)
        )

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """Decode one latent frame into 1 (first chunk) or 4 pixel frames."""
        x = self.conv1(x, cache)
        for layer in (*self.middle, *self.upsamples, *self.head):
            x = _run(layer, x, cache)
        return x
