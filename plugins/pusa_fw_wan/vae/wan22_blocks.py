"""Building blocks that the Wan2.2 VAE (``Wan2.2_VAE.pth``, TI2V-5B) adds to the Wan2.1 ones.

- `patchify` / `unpatchify`: 2x2 pixels <-> 12 channels around the encoder and decoder;
- `AvgDown3D` / `DupUp3D`: parameter-free shortcuts that move space/time into channels (averaging
  channel groups) and back (repeating channels);
- `DownStage` / `UpStage`: one encoder / decoder stage (residual blocks and a `Resample`) with its
  shortcut, named like the official ``Down_ResidualBlock`` / ``Up_ResidualBlock`` keys
  (``encoder.downsamples.1.downsamples.2.time_conv.weight`` ...).

The causal conv, RMS norm, residual, attention and resampling blocks are those of the Wan2.1 VAE
(`pusa_fw_wan.vae.blocks`); only the up-sampling conv keeps its channel count here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from pusa_fw_wan.vae.blocks import CausalCache, Resample, ResidualBlock

PATCH = 2
"""Pixels per side folded into channels before the encoder (3 -> 12 channels)."""


def patchify(video: torch.Tensor) -> torch.Tensor:
    """``[B, 3, T, H, W] -> [B, 12, T, H/2, W/2]``; channel ``c*4 + r*2 + q`` holds offset (q along H, r along W)."""
    return rearrange(video, "b c t (h q) (w r) -> b (c r q) t h w", q=PATCH, r=PATCH)


def unpatchify(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `patchify`: ``[B, 12, T, h, w] -> [B, 3, T, 2h, 2w]``."""
    return rearrange(x, "b (c r q) t h w -> b c t (h q) (w r)", q=PATCH, r=PATCH)


class AvgDown3D(nn.Module):
    """Shortcut of a down stage: fold ``factor_t x factor_s x factor_s`` blocks into channels, average groups.

    Time is zero-padded at the front to a multiple of ``factor_t`` (so a 1-frame first chunk gives one
    frame). Channel ``c * factor + offset`` of the folded tensor goes to output channel
    ``(c * factor + offset) // group``.

    Args:
        in_channels: channels of the stage input.
        out_channels: channels of the stage output.
        factor_t: time reduction (1 or 2).
        factor_s: spatial reduction per side (1 or 2).
    """

    def __init__(self, in_channels: int, out_channels: int, factor_t: int, factor_s: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.factor_t, self.factor_s = factor_t, factor_s
        folded = in_channels * factor_t * factor_s * factor_s
        if folded % out_channels:
            raise ValueError(f"AvgDown3D: {folded} folded channels do not split into {out_channels} groups")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, t, H, W] -> [B, C_out, ceil(t / factor_t), H / factor_s, W / factor_s]``."""
        front = (self.factor_t - x.shape[2] % self.factor_t) % self.factor_t
        x = F.pad(x, (0, 0, 0, 0, front, 0))
        folded = rearrange(
            x, "b c (t ft) (h fh) (w fw) -> b (c ft fh fw) t h w",
            ft=self.factor_t, fh=self.factor_s, fw=self.factor_s,
        )  # fmt: skip
        groups = rearrange(folded, "b (o g) t h w -> b o g t h w", o=self.out_channels)
        return groups.mean(dim=2)


class DupUp3D(nn.Module):
    """Shortcut of an up stage: repeat channels, then unfold them into ``factor_t x factor_s x factor_s`` blocks.

    On the first chunk of a decode the first ``factor_t - 1`` frames are dropped (the main path does not
    double time there either), so latent frame 0 gives one frame.

    Args:
        in_channels: channels of the stage input.
        out_channels: channels of the stage output.
        factor_t: time expansion (1 or 2).
        factor_s: spatial expansion per side (2).
    """

    def __init__(self, in_channels: int, out_channels: int, factor_t: int, factor_s: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.factor_t, self.factor_s = factor_t, factor_s
        unfolded = out_channels * factor_t * factor_s * factor_s
        if unfolded % in_channels:
            raise ValueError(f"DupUp3D: {unfolded} unfolded channels are not a multiple of {in_channels}")
        self.repeats = unfolded // in_channels

    def forward(self, x: torch.Tensor, first_chunk: bool = False) -> torch.Tensor:
        """``[B, C_in, t, h, w] -> [B, C_out, t * factor_t (- factor_t + 1 on the first chunk), 2h, 2w]``."""
        repeated = x.repeat_interleave(self.repeats, dim=1)
        x = rearrange(
            repeated, "b (o ft fh fw) t h w -> b o (t ft) (h fh) (w fw)",
            o=self.out_channels, ft=self.factor_t, fh=self.factor_s, fw=self.factor_s,
        )  # fmt: skip
        return x[:, :, self.factor_t - 1 :] if first_chunk else x


class DownStage(nn.Module):
    """One encoder stage: ``blocks`` residual blocks, an optional down-sampling, plus an `AvgDown3D` shortcut.

    Args:
        in_dim: input channels.
        out_dim: output channels.
        blocks: residual blocks in the stage.
        temporal: the down-sampling also halves time (``downsample3d``).
        down: the stage down-samples (all but the last).
        dropout: dropout inside the residual blocks.
    """

    def __init__(
        self, in_dim: int, out_dim: int, blocks: int, *, temporal: bool, down: bool, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.avg_shortcut = AvgDown3D(in_dim, out_dim, 2 if temporal else 1, 2 if down else 1)
        layers: list[nn.Module] = []
        for _ in range(blocks):
            layers.append(ResidualBlock(in_dim, out_dim, dropout))
            in_dim = out_dim
        if down:
            layers.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """``[B, C_in, t, H, W] -> [B, C_out, t', H', W']`` for one time chunk."""
        shortcut = self.avg_shortcut(x)
        for layer in self.downsamples:
            x = layer(x, cache)
        return x + shortcut


class UpStage(nn.Module):
    """One decoder stage: ``blocks`` residual blocks and an optional up-sampling, plus a `DupUp3D` shortcut.

    Args:
        in_dim: input channels.
        out_dim: output channels (the up-sampling keeps them).
        blocks: residual blocks in the stage.
        temporal: the up-sampling also doubles time (``upsample3d``).
        up: the stage up-samples (all but the last; only those have a shortcut).
        dropout: dropout inside the residual blocks.
    """

    def __init__(
        self, in_dim: int, out_dim: int, blocks: int, *, temporal: bool, up: bool, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.dup_shortcut = DupUp3D(in_dim, out_dim, 2 if temporal else 1, 2) if up else None
        layers: list[nn.Module] = []
        for _ in range(blocks):
            layers.append(ResidualBlock(in_dim, out_dim, dropout))
            in_dim = out_dim
        if up:
            mode = "upsample3d" if temporal else "upsample2d"
            layers.append(Resample(out_dim, mode, halve_on_upsample=False))
        self.upsamples = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, cache: CausalCache, first_chunk: bool = False) -> torch.Tensor:
        """``[B, C_in, t, h, w] -> [B, C_out, t', 2h, 2w]`` (``t'`` = t, or 2t after the first chunk)."""
        shortcut = self.dup_shortcut(x, first_chunk) if self.dup_shortcut is not None else None
        for layer in self.upsamples:
            x = layer(x, cache)
        return x if shortcut is None else x + shortcut
