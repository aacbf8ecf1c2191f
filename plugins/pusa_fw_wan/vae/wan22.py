"""The Wan2.2 VAE (TI2V-5B): video ``[B, 3, T, H, W]`` in [-1, 1] <-> latents ``[B, 48, F, H/16, W/16]``.

Our own implementation of the official ``Wan2_2_VAE`` (wrapper + ``WanVAE_`` of ``vae2_2.py``),
number-for-number, with the API of `WanVAE` (it is a subclass; `WanVAE.from_pretrained` returns one when
the checkpoint holds this VAE):

- encode folds 2x2 pixels into 12 channels, runs the encoder on time chunks of 1, 4, 4, ... frames with a
  causal cache, takes the posterior mean and normalises it: ``(mu - mean) * (1 / std)`` (48 constants);
- decode computes ``z / (1 / std) + mean``, decodes one latent frame at a time (the first with
  ``first_chunk``: 1 pixel frame, then 4 per latent), unfolds the 12 channels and clamps to [-1, 1].

Spatial tiling and the memory budget work as for Wan2.1, in cells of 16x16 pixels.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from pusa_fw_wan.vae.blocks import CausalCache, CausalConv3d
from pusa_fw_wan.vae.checkpoint import (
    WAN22_LATENTS_MEAN,
    WAN22_LATENTS_STD,
    LoadedVAEWeights,
    check_requested_widths,
    infer_widths,
)
from pusa_fw_wan.vae.inputs import TEMPORAL_FACTOR
from pusa_fw_wan.vae.model import DEFAULT_MEMORY_BUDGET_BYTES, RELEASED, Width, WanVAE, _element_size
from pusa_fw_wan.vae.wan22_blocks import patchify, unpatchify
from pusa_fw_wan.vae.wan22_networks import Decoder22, Encoder22, Wan22Architecture

# Working bytes of one untiled chunked pass per latent cell (16x16 pixels), per unit of the encoder
# (encode) or decoder (decode) width, per byte of the compute dtype. From the peak of live tensor bytes
# of the release widths (160 / 256, fp32) between 512x512 and 704x1280 (9 frames), traced on the meta
# device (decode 4.28 -> 14.72 GiB, encode 1.61 -> 5.52 GiB), times the ratio of measured peak RSS to
# that traced peak for the Wan2.1 VAE, whose blocks these are (decode 1.24, encode 1.03). Estimates:
# untiled 480x832 decode 8.1 GiB (fits the default budget), 704x1280 decode 18.3 GiB (tiled).
DECODE22_BYTES_PER_CELL_PER_DIM = 256 * 21.3
ENCODE22_BYTES_PER_CELL_PER_DIM = 256 * 10.6
FORCED_TILE_SIZE_22 = 16
"""Tile side in latent cells (256 pixels) when tiling is forced on an input that fits the budget."""


class Wan22VAE(WanVAE):
    """Wan2.2 video VAE (``Wan2.2_VAE.pth``) with chunked causal caching and optional spatial tiling.

    Module names follow the official keys: ``encoder``, ``conv1`` (posterior projection), ``conv2``
    (latent projection), ``decoder``.

    Args:
        dim: encoder base width (160 in the release).
        decoder_dim: decoder base width (256 in the release).
        z_dim: latent channels (48).
        latents_mean: per-channel means used to normalise latents (the Wan2.2 constants by default).
        latents_std: per-channel stds.
        memory_budget_bytes: working memory one pass may use; larger passes are tiled when ``tiled=None``.
        tile_overlap: overlap of neighbouring tiles in latent cells (4 -> 64 pixels).
        tile_size: tile side in latent cells for tiled passes; None derives it from the budget.
    """

    version: ClassVar[str] = "2.2"
    spatial_factor: ClassVar[int] = 16
    forced_tile_size: ClassVar[int] = FORCED_TILE_SIZE_22

    def __init__(
        self,
        dim: int = 160,
        z_dim: int = 48,
        *,
        decoder_dim: int = 256,
        latents_mean: tuple[float, ...] = WAN22_LATENTS_MEAN,
        latents_std: tuple[float, ...] = WAN22_LATENTS_STD,
        memory_budget_bytes: float = DEFAULT_MEMORY_BUDGET_BYTES,
        tile_overlap: int = 4,
        tile_size: int | None = None,
    ) -> None:
        torch.nn.Module.__init__(self)
        self._set_options(z_dim, latents_mean, latents_std, memory_budget_bytes, tile_overlap, tile_size)
        self.arch = Wan22Architecture(dim=dim, decoder_dim=decoder_dim, z_dim=z_dim)
        self.encoder = Encoder22(self.arch)
        self.conv1 = CausalConv3d(z_dim * 2, z_dim * 2, 1)
        self.decoder = Decoder22(self.arch)
        self.conv2 = CausalConv3d(z_dim, z_dim, 1)

    @classmethod
    def _load(
        cls,
        weights: LoadedVAEWeights,
        dim: Width,
        z_dim: Width,
        dtype: torch.dtype,
        device: str | torch.device,
        options: dict[str, float],
    ) -> WanVAE:
        """Build the Wan2.2 VAE at the checkpoint's widths and load `weights` (strictly).

        The normalisation constants are the official Wan2.2 ones (checkpoint files do not carry any).
        """
        release = Wan22Architecture()
        found_dim, found_z = infer_widths(weights.state_dict)
        dim = release.dim if dim == RELEASED else dim
        z_dim = release.z_dim if z_dim == RELEASED else z_dim
        check_requested_widths(weights.source, {"dim": (dim, found_dim), "z_dim": (z_dim, found_z)})
        decoder_in = weights.state_dict.get("decoder.conv1.weight")
        decoder_dim = decoder_in.shape[0] // release.dim_mult[-1] if decoder_in is not None else release.decoder_dim
        with torch.device("meta"):
            model = cls(
                dim or found_dim or release.dim, z_dim or found_z or release.z_dim, decoder_dim=decoder_dim,
                **options,
            )  # fmt: skip
        return model._assign_weights(weights, dtype, device)

    def _bytes_per_cell(self, direction: str) -> float:
        """Estimated working bytes of one untiled pass per latent cell (16x16 pixels)."""
        if direction == "decode":
            return DECODE22_BYTES_PER_CELL_PER_DIM * self.arch.decoder_dim * _element_size(self.dtype)
        return ENCODE22_BYTES_PER_CELL_PER_DIM * self.arch.dim * _element_size(self.dtype)

    def _encode_chunks(self, video: torch.Tensor) -> torch.Tensor:
        """Untiled chunked encode: ``[B, 3, T, H, W]`` -> raw posterior mean ``[B, 48, F, H/16, W/16]`` fp32."""
        return super()._encode_chunks(patchify(video))

    def _decode_chunks(self, z: torch.Tensor) -> torch.Tensor:
        """Untiled chunked decode: ``[B, 48, F, h, w]`` (raw space) -> unclamped ``[B, 3, T, 16h, 16w]`` fp32."""
        cache = CausalCache()
        x = self.conv2(z)
        batch, _, num_latents, height, width = x.shape
        num_frames = TEMPORAL_FACTOR * (num_latents - 1) + 1
        factor = self.spatial_factor
        video = torch.empty(batch, 3, num_frames, height * factor, width * factor, device=z.device)
        for index in range(num_latents):
            frames = unpatchify(self.decoder(x[:, :, index : index + 1], cache, first_chunk=index == 0))
            start = 0 if index == 0 else TEMPORAL_FACTOR * (index - 1) + 1
            video[:, :, start : start + frames.shape[2]] = frames.float()
        return video
