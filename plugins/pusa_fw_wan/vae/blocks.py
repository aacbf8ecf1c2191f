"""Building blocks of the Wan2.1 VAE: causal 3D convolution with a chunk cache, RMS norm, residual,
attention and resampling blocks.

Every block works on video tensors ``[B, C, T, H, W]`` and is run chunk by chunk in time (see
`CausalCache`). Submodule names follow the official ``Wan2.1_VAE.pth`` keys (``residual.2``,
``resample.1``, ``time_conv``, ``to_qkv`` ...), so the official state dict loads without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

CACHE_FRAMES = 2
"""Frames of its own input that a temporal-kernel-3 causal conv keeps for the next chunk."""


class CausalCache:
    """Per-module state carried from one time chunk to the next.

    The official code keeps a flat list indexed by call order; here each module stores its own entry,
    keyed by the module object, which makes the order of calls irrelevant. One cache serves one
    chunked pass (one encode or one decode of one spatial tile) and is discarded afterwards.
    """

    def __init__(self) -> None:
        self._entries: dict[int, torch.Tensor] = {}

    def get(self, module: nn.Module) -> torch.Tensor | None:
        """The tensor `module` stored at the previous chunk, or None before the first chunk."""
        return self._entries.get(id(module))

    def put(self, module: nn.Module, frames: torch.Tensor) -> None:
        """Store `frames` ``[B, C, t, H, W]`` for `module` (a copy, so the source can be freed)."""
        self._entries[id(module)] = frames.detach().clone()


class CausalConv3d(nn.Conv3d):
    """3D convolution that pads time on the past side only (``2 * p`` frames) and space symmetrically.

    With a cache, the last `CACHE_FRAMES` input frames of the previous chunk replace (part of) the
    zero padding in time, so running a video chunk by chunk equals running it whole.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int],
        stride: int | tuple[int, int, int] = 1,
        padding: int | tuple[int, int, int] = 0,
    ) -> None:
        pad_t, pad_h, pad_w = (padding,) * 3 if isinstance(padding, int) else padding
        # Space is zero-padded by the convolution itself; time is padded here, on the past side only.
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=(0, pad_h, pad_w))
        self.past_frames = 2 * pad_t

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        """Convolve one chunk.

        Args:
            x: ``[B, C_in, t, H, W]``.
            cache: chunk cache; when given, the previous chunk's last frames are prepended and this
                chunk's last frames are stored (only for convs that look into the past).

        Returns:
            ``[B, C_out, t', H', W']``.
        """
        if self.past_frames == 0:
            return super().forward(x)
        previous = cache.get(self) if cache is not None else None
        past = [] if previous is None else [previous]
        if cache is not None:
            short = CACHE_FRAMES - x.shape[2]
            keep = torch.cat([previous[:, :, -short:], x], dim=2) if previous is not None and short > 0 else x
            cache.put(self, keep[:, :, -CACHE_FRAMES:])
        missing = self.past_frames - sum(p.shape[2] for p in past)
        if missing > 0:
            past.insert(0, x.new_zeros(x.shape[0], x.shape[1], missing, *x.shape[3:]))
        # One copy holds zero padding, the previous chunk's frames and this chunk.
        return super().forward(torch.cat([*past, x], dim=2))


class RMSNorm(nn.Module):
    """RMS norm over channels: ``normalize(x, dim=1) * sqrt(C) * gamma`` (no bias).

    Args:
        dim: channel count C.
        images: True for 4-d inputs ``[N, C, H, W]`` (gamma ``[C, 1, 1]``), False for video
            ``[B, C, T, H, W]`` (gamma ``[C, 1, 1, 1]``).
    """

    def __init__(self, dim: int, images: bool = True) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, *((1, 1) if images else (1, 1, 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise `x` ``[N, C, ...]``; half-precision inputs are normalised in fp32."""
        normed = F.normalize(x.float() if x.element_size() < 4 else x, dim=1).to(x.dtype)
        return normed * self.scale * self.gamma


class ResidualBlock(nn.Module):
    """RMS -> SiLU -> CausalConv3d 3^3 -> RMS -> SiLU -> Dropout -> CausalConv3d 3^3, plus a shortcut.

    The shortcut is a 1x1x1 conv when the channel count changes, the identity otherwise.
    """

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            RMSNorm(in_dim, images=False),
            nn.SiLU(),
            CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim, images=False),
            nn.SiLU(),
            nn.Dropout(dropout),
            CausalConv3d(out_dim, out_dim, 3, padding=1),
        )
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """``[B, C_in, t, H, W] -> [B, C_out, t, H, W]``."""
        h = self.shortcut(x)
        for layer in self.residual:
            x = layer(x, cache) if isinstance(layer, CausalConv3d) else layer(x)
        return x + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame separately, with a residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        """``[B, C, t, H, W] -> [B, C, t, H, W]``; frames do not see each other, so no cache is used."""
        batch, _, frames, height, width = x.shape
        per_frame = rearrange(x, "b c t h w -> (b t) c h w")
        qkv = self.to_qkv(self.norm(per_frame))
        q, k, v = rearrange(qkv, "n (three c) h w -> three n 1 (h w) c", three=3).contiguous()
        attended = F.scaled_dot_product_attention(q, k, v)
        attended = rearrange(attended, "n 1 (h w) c -> n c h w", h=height, w=width)
        out = rearrange(self.proj(attended), "(b t) c h w -> b c t h w", b=batch, t=frames)
        return out + x


class NearestUpsample2d(nn.Upsample):
    """Nearest-exact x2 spatial upsampling computed in fp32 and cast back (as the official code)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type_as(x)


class Resample(nn.Module):
    """Spatial x2 down/up-sampling, optionally with a causal x2 resampling in time.

    Modes: ``downsample2d``, ``downsample3d`` (time stride 2), ``upsample2d``, ``upsample3d`` (each frame
    becomes two). Up modes halve the channel count in the Wan2.1 VAE and keep it in the Wan2.2 VAE
    (``halve_on_upsample=False``); down modes keep it.

    Time handling across chunks (what the official chunk loop does, reproduced exactly):
      - ``downsample3d``: the first chunk skips the time conv; later chunks prepend the previous
        chunk's last frame and convolve with stride 2 (kernel 3, no padding).
      - ``upsample3d``: the first chunk skips the time doubling; from the second chunk on the time
        conv sees zero padding instead of the first chunk's frames (the official ``Rep`` marker),
        i.e. the cache is reset to a zero frame after the first chunk.
    """

    def __init__(self, dim: int, mode: str, *, halve_on_upsample: bool = True) -> None:
        super().__init__()
        self.mode = mode
        if mode in ("upsample2d", "upsample3d"):
            self.resample = nn.Sequential(
                NearestUpsample2d(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                nn.Conv2d(dim, dim // 2 if halve_on_upsample else dim, 3, padding=1),
            )
        elif mode in ("downsample2d", "downsample3d"):
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=(2, 2)))
        else:
            raise ValueError(f"Resample mode={mode!r} is unknown; use downsample2d/3d or upsample2d/3d")
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=(0, 0, 0))

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """``[B, C, t, H, W]`` -> ``[B, C/2 (or C), t or 2t, 2H, 2W]`` (up) or ``[B, C, t', H/2, W/2]`` (down)."""
        if self.mode == "upsample3d":
            x = self._double_frames(x, cache)
        frames = x.shape[2]
        spatial = self.resample(rearrange(x, "b c t h w -> (b t) c h w"))
        x = rearrange(spatial, "(b t) c h w -> b c t h w", t=frames)
        if self.mode == "downsample3d":
            x = self._halve_frames(x, cache)
        return x

    def _double_frames(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """``[B, C, t, H, W] -> [B, C, 2t, H, W]`` (unchanged on the first chunk)."""
        if cache.get(self.time_conv) is None:
            cache.put(self.time_conv, torch.zeros_like(x[:, :, -1:]))
            return x
        doubled = self.time_conv(x, cache)
        return rearrange(doubled, "b (two c) t h w -> b c (t two) h w", two=2)

    def _halve_frames(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """``[B, C, t, H, W] -> [B, C, t/2, H, W]`` using the previous chunk's last frame (skip on the first)."""
        previous = cache.get(self.time_conv)
        cache.put(self.time_conv, x[:, :, -1:])
        if previous is None:
            return x
        return self.time_conv(torch.cat([previous, x], dim=2))
