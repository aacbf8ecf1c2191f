"""Encoder and decoder networks of the Wan2.2 VAE, laid out like the official ``Wan2.2_VAE.pth`` keys.

`Wan22Architecture` holds the constructor numbers (the release: encoder width 160, decoder width 256,
48 latent channels). Like the Wan2.1 networks they process one time chunk per call with a `CausalCache`:
the encoder takes 1 or 4 patchified frames (12 channels, half resolution) and returns 1 latent frame; the
decoder takes 1 latent frame and returns 1 (first chunk) or 4 patchified frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn

from pusa_fw_wan.vae.blocks import AttentionBlock, CausalCache, CausalConv3d, ResidualBlock, RMSNorm
from pusa_fw_wan.vae.wan22_blocks import PATCH, DownStage, UpStage

PATCH_CHANNELS = 3 * PATCH * PATCH
"""Channels of a patchified video (3 colours x 2 x 2 pixels)."""


@dataclass(frozen=True)
class Wan22Architecture:
    """Constructor numbers of the Wan2.2 VAE (``WanVAE_`` of ``vae2_2.py`` as ``Wan2_2_VAE`` builds it).

    Attributes:
        dim: encoder base width (160 in the release).
        decoder_dim: decoder base width (256 in the release).
        z_dim: latent channels (48).
        dim_mult: width multipliers of the four stages.
        num_res_blocks: residual blocks per encoder stage (the decoder uses one more).
        temporal_downsample: which of the three down-sampling steps also halve time.
        dropout: dropout rate inside the residual blocks (0 at inference).
    """

    dim: int = 160
    decoder_dim: int = 256
    z_dim: int = 48
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    dropout: float = 0.0

    @property
    def temporal_upsample(self) -> tuple[bool, ...]:
        """Which decoder up-sampling steps double time (the encoder's choice, reversed)."""
        return tuple(reversed(self.temporal_downsample))


def _run(layer: nn.Module, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
    """Call `layer` with the cache unless it is a norm or an activation."""
    if isinstance(layer, (RMSNorm, nn.SiLU)):
        return layer(x)
    return layer(x, cache)


def _middle(width: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        ResidualBlock(width, width, dropout), AttentionBlock(width), ResidualBlock(width, width, dropout)
    )


def _head(width: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(RMSNorm(width, images=False), nn.SiLU(), CausalConv3d(width, out_channels, 3, padding=1))


class Encoder22(nn.Module):
    """Patchified pixels ``[B, 12, t, H/2, W/2]`` -> posterior parameters ``[B, 2*z_dim, t', H/16, W/16]``."""

    def __init__(self, arch: Wan22Architecture) -> None:
        super().__init__()
        dims = [arch.dim * m for m in (1, *arch.dim_mult)]
        self.conv1 = CausalConv3d(PATCH_CHANNELS, dims[0], 3, padding=1)
        last_stage = len(arch.dim_mult) - 1
        self.downsamples = nn.Sequential(
            *(
                DownStage(
                    in_dim, out_dim, arch.num_res_blocks, dropout=arch.dropout, down=stage != last_stage,
                    temporal=stage < len(arch.temporal_downsample) and arch.temporal_downsample[stage],
                )  # fmt: skip
                for stage, (in_dim, out_dim) in enumerate(pairwise(dims))
            )
        )
        self.middle = _middle(dims[-1], arch.dropout)
        self.head = _head(dims[-1], arch.z_dim * 2)

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """Encode one chunk of 1 (first chunk) or 4 frames into one latent frame."""
        x = self.conv1(x, cache)
        for layer in (*self.downsamples, *self.middle, *self.head):
            x = _run(layer, x, cache)
        return x


class Decoder22(nn.Module):
    """Latents ``[B, z_dim, t, h, w]`` -> patchified pixels ``[B, 12, t', 8h, 8w]`` for one chunk."""

    def __init__(self, arch: Wan22Architecture) -> None:
        super().__init__()
        dims = [arch.decoder_dim * m for m in (arch.dim_mult[-1], *reversed(arch.dim_mult))]
        self.conv1 = CausalConv3d(arch.z_dim, dims[0], 3, padding=1)
        self.middle = _middle(dims[0], arch.dropout)
        last_stage = len(arch.dim_mult) - 1
        temporal = arch.temporal_upsample
        self.upsamples = nn.Sequential(
            *(
                UpStage(
                    in_dim, out_dim, arch.num_res_blocks + 1, dropout=arch.dropout, up=stage != last_stage,
                    temporal=stage < len(temporal) and temporal[stage],
                )  # fmt: skip
                for stage, (in_dim, out_dim) in enumerate(pairwise(dims))
            )
        )
        self.head = _head(dims[-1], PATCH_CHANNELS)

    def forward(self, x: torch.Tensor, cache: CausalCache, first_chunk: bool = False) -> torch.Tensor:
        """Decode one latent frame into 1 (``first_chunk``) or 4 patchified frames."""
        x = self.conv1(x, cache)
        for layer in self.middle:
            x = _run(layer, x, cache)
        for stage in self.upsamples:
            x = stage(x, cache, first_chunk)
        for layer in self.head:
            x = _run(layer, x, cache)
        return x
