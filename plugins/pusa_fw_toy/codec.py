"""`ToyCodec`: a lossless pixel-unshuffle codec behind the `WanVAE` interface.

Encoding folds each `factor` x `factor` block of pixels, and each group of `temporal_stride` frames, into
channels: video `[B, 3, T, H, W]` in [-1, 1] -> latents `[B, 3 * stride * factor^2, F, H / factor,
W / factor]`. Nothing is learned and nothing is lost: `decode(encode(video))` returns the video bit for
bit. Two frame layouts:

- ``first_frame_alone=False`` (the default, with stride 1: every pixel frame is its own latent frame);
- ``first_frame_alone=True``: Wan's layout, latent 0 is frame 0 (repeated `stride` times to fill the
  channels; decoding takes the first copy) and latent k >= 1 stacks frames s*k-s+1 .. s*k.

With ``position_ramps=True`` the codec appends two channels that say where each cell is: its x and its
y, each a ramp from -1 (first cell) to 1 (last cell), the same in every frame; decoding drops them. Wan's
DiT sees positions only through RoPE, which is relative: on a black background a token cannot tell
the edge of the frame from its middle, and a world with walls needs exactly that. A real VAE leaks
the frame edge into its latents through its convolutions' zero padding; these two channels give the toy
the same knowledge, explicitly. Everything else stays lossless.

The codec declares its `LatentGeometry`, so tasks, the pipeline and the trainer size everything from it.
"""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from pusa_fw.errors import InputError
from pusa_fw.geometry import LatentGeometry

__all__ = ["POSITION_CHANNELS", "ToyCodec", "ToyCodecConfig", "position_ramps"]

POSITION_CHANNELS = 2
"""Channels `ToyCodecConfig.position_ramps` appends (x, then y)."""


def position_ramps(height: int, width: int) -> torch.Tensor:
    """`[2, height, width]` float32: channel 0 each cell's x, channel 1 its y, ramps from -1 to 1.

    A side of one cell has the value 0.
    """
    def ramp(cells: int) -> torch.Tensor:
        return torch.linspace(-1.0, 1.0, cells) if cells > 1 else torch.zeros(1)

    x = ramp(width)[None, :].expand(height, width)
    y = ramp(height)[:, None].expand(height, width)
    return torch.stack([x, y])


class ToyCodecConfig(BaseModel):
    """Layout of a `ToyCodec`.

    Attributes:
        factor: pixels per latent cell along height and width.
        temporal_stride: pixel frames per latent frame.
        first_frame_alone: Wan's layout (frame 0 has its own latent) instead of plain groups.
        patch_size: latent cells per DiT token side (declared in the geometry).
        position_ramps: append two channels holding each cell's x and y in [-1, 1] (see the module
            docstring); decoding drops them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    factor: int = Field(2, ge=1, description="pixels per latent cell along height and width")
    temporal_stride: int = Field(1, ge=1, description="pixel frames per latent frame")
    first_frame_alone: bool = Field(False, description="frame 0 has its own latent (Wan's layout)")
    patch_size: int = Field(2, ge=1, description="latent cells per token side of the paired DiT")
    position_ramps: bool = Field(False, description="two extra channels with each cell's x and y in [-1, 1]")

    @property
    def pixel_channels(self) -> int:
        """Channels that hold pixels: 3 colours x stride x factor^2."""
        return 3 * self.temporal_stride * self.factor**2

    @property
    def channels(self) -> int:
        """Latent channels: the pixel channels, plus 2 with `position_ramps`."""
        return self.pixel_channels + (POSITION_CHANNELS if self.position_ramps else 0)

    def geometry(self) -> LatentGeometry:
        """The `LatentGeometry` this layout implements."""
        return LatentGeometry(
            temporal_stride=self.temporal_stride, first_frame_alone=self.first_frame_alone,
            spatial_factor=self.factor, patch_size=self.patch_size, channels=self.channels,
        )


class ToyCodec(nn.Module):
    """Pixel-unshuffle codec with `WanVAE`'s ``encode`` / ``encode_image`` / ``decode`` interface.

    Args:
        config: the layout (default: 2 x 2 pixels per cell, one frame per latent, 12 channels).
    """

    def __init__(self, config: ToyCodecConfig | None = None) -> None:
        super().__init__()
        self.config = config or ToyCodecConfig()
        self.geometry = self.config.geometry()
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)

    @property
    def device(self) -> torch.device:
        """Where encode and decode put their outputs."""
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def _check_video(self, video: torch.Tensor) -> None:
        if video.dim() != 5 or video.shape[1] != 3:
            raise InputError(f"video must be [B, 3, T, H, W], got {tuple(video.shape)}")
        self.geometry.num_latent_frames(int(video.shape[2]))
        factor = self.config.factor
        if video.shape[3] % factor or video.shape[4] % factor:
            raise InputError(
                f"video of {video.shape[3]}x{video.shape[4]} pixels does not split into {factor}x{factor} cells; "
                f"use multiples of {factor}"
            )

    @torch.no_grad()
    def encode(self, video: torch.Tensor, **_: Any) -> torch.Tensor:
        """Fold pixels into latents.

        Args:
            video: `[B, 3, T, H, W]` in [-1, 1], T a frame count of the geometry.

        Returns:
            `[B, C, F, H / factor, W / factor]` float32 on the codec's device.
        """
        self._check_video(video)
        video = video.to(self.device, torch.float32)
        stride = self.config.temporal_stride
        if self.config.first_frame_alone:
            video = torch.cat([video[:, :, :1].expand(-1, -1, stride, -1, -1), video[:, :, 1:]], dim=2)
        latents = rearrange(video, "b c (f s) (h p) (w q) -> b (s c p q) f h w", s=stride, p=self.config.factor,
                            q=self.config.factor)
        if self.config.position_ramps:
            batch, _, frames, height, width = latents.shape
            ramps = position_ramps(height, width).to(latents.device)
            latents = torch.cat([latents, ramps[None, :, None].expand(batch, -1, frames, -1, -1)], dim=1)
        return latents.contiguous()

    def encode_image(self, image: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Encode images as still clips of the geometry's shortest length: `[B, 3, H, W]` -> `[B, C, 1, h, w]`."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise InputError(f"image must be [B, 3, H, W], got {tuple(image.shape)}")
        frames = self.geometry.num_frames(1)
        return self.encode(image.unsqueeze(2).expand(-1, -1, frames, -1, -1), **kwargs)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, *, clamp: bool = True, **_: Any) -> torch.Tensor:
        """Unfold latents into pixels (the exact inverse of `encode`).

        Args:
            latents: `[B, C, F, h, w]`.
            clamp: clamp the video to [-1, 1] (no effect on encoded videos).

        Returns:
            `[B, 3, T, h * factor, w * factor]` float32 on the codec's device.
        """
        if latents.dim() != 5 or latents.shape[1] != self.config.channels:
            raise InputError(
                f"latents must be [B, {self.config.channels}, F, h, w] for this codec, got {tuple(latents.shape)}"
            )
        stride = self.config.temporal_stride
        latents = latents[:, :self.config.pixel_channels]  # position ramps, if any, carry no pixels
        video = rearrange(latents.to(self.device, torch.float32), "b (s c p q) f h w -> b c (f s) (h p) (w q)",
                          s=stride, p=self.config.factor, q=self.config.factor)
        if self.config.first_frame_alone:
            video = torch.cat([video[:, :, :1], video[:, :, stride:]], dim=2)
        return video.clamp(-1.0, 1.0) if clamp else video.contiguous()
