"""The Wan2.1 VAE: video ``[B, 3, T, H, W]`` in [-1, 1] <-> normalised latents ``[B, 16, F, H/8, W/8]``.

Our own implementation of the official ``WanVAE`` (wrapper + ``WanVAE_``), number-for-number:

- encode runs the encoder on time chunks of 1, 4, 4, ... frames with a causal cache, takes the posterior
  mean (no sampling) and normalises it per channel: ``(mu - mean) * (1 / std)``;
- decode inverts the normalisation (``z / (1 / std) + mean``), decodes one latent frame at a time
  (1 pixel frame, then 4 per latent) and clamps to [-1, 1].

On top of the official behaviour, both directions can run in overlapping spatial tiles (see
`vae_tiling`), switched on automatically when a pass would exceed ``memory_budget_bytes``, so memory stays
bounded as the resolution grows. Tiling is an approximation (the per-frame attention of the middle block
and the convolutions near tile borders see less context); the error is measured in the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from pusa_fw.errors import CheckpointError, InputError
from pusa_fw.geometry import LatentGeometry

from pusa_fw_wan.vae.blocks import CausalCache, CausalConv3d
from pusa_fw_wan.vae.checkpoint import (
    WAN21_LATENTS_MEAN,
    WAN21_LATENTS_STD,
    LoadedVAEWeights,
    check_requested_widths,
    check_state_dict,
    detect_vae_version,
    infer_widths,
    read_vae_weights,
)
from pusa_fw_wan.vae.inputs import SPATIAL_FACTOR, TEMPORAL_FACTOR, check_image, check_latents, check_video
from pusa_fw_wan.vae.networks import Decoder3d, Encoder3d, VAEArchitecture
from pusa_fw_wan.vae.tiling import TilePlan, choose_tile_size, plan_tiles, run_tiled

DEFAULT_MEMORY_BUDGET_BYTES = 10 * 1024**3
"""Working memory one encode/decode pass may use before it is tiled (weights and the output not counted).

With the released width (dim 96, fp32) 480x832 stays untiled, i.e. exactly the official decode (estimated
8.0 GiB; measured peak 8.0 GiB RSS), while 720p (estimated 18.5 GiB untiled) is cut into 4 tiles of
392x672 pixels (estimated 5.3 GiB each), so a 720p decode fits a 24 GB machine."""
FORCED_TILE_SIZE = 32
"""Tile side in latent positions (256 pixels) when tiling is forced on an input that fits the budget."""

# Working bytes of one untiled chunked pass per spatial cell (one latent position = 8x8 pixels), per unit
# of `dim`, per byte of the compute dtype: the slope of the peak RSS (minus the RSS before the pass) over
# two frame sizes, measured with benchmarks/bench_vae.py at dim 32 (decode 0.78 -> 2.92 GiB and encode
# 0.60 -> 1.95 GiB from 256x416 to 512x832 pixels). About 56 (decode) and 36 (encode) live activation
# frames of `dim` channels at full resolution: the 4-frame chunks, the 2-frame caches of every causal conv.
DECODE_BYTES_PER_CELL_PER_DIM = 64 * 56.0
ENCODE_BYTES_PER_CELL_PER_DIM = 64 * 36.0

RELEASED = "released"
"""Width argument of `WanVAE.from_pretrained` meaning: the released width of the VAE the file holds."""
Width = int | None | Literal["released"]


class WanVAE(nn.Module):
    """Wan2.1 video VAE with chunked causal caching and optional spatial tiling.

    `from_pretrained` also loads the Wan2.2 VAE (``Wan2.2_VAE.pth``, detected from its keys) and then
    returns a `pusa_fw_wan.vae.wan22.Wan22VAE`, a subclass with the same API.

    Module names follow the official ``Wan2.1_VAE.pth`` keys: ``encoder``, ``conv1`` (posterior
    projection), ``conv2`` (latent projection), ``decoder``.

    Args:
        dim: base width (96 for the released model).
        z_dim: latent channels (16).
        latents_mean: per-channel means used to normalise latents (the Wan2.1 constants by default).
        latents_std: per-channel stds.
        memory_budget_bytes: working memory one pass may use; larger passes are tiled when
            ``tiled=None``. Weights and the returned tensor are not counted.
        tile_overlap: overlap of neighbouring tiles in latent positions (8 -> 64 pixels).
        tile_size: tile side in latent positions for tiled passes; None derives it from the budget
            (and uses `FORCED_TILE_SIZE` when ``tiled=True`` is asked for an input that fits the budget).
    """

    version: ClassVar[str] = "2.1"
    spatial_factor: ClassVar[int] = SPATIAL_FACTOR
    """Pixels per latent cell along H and W."""
    forced_tile_size: ClassVar[int] = FORCED_TILE_SIZE

    def __init__(
        self,
        dim: int = 96,
        z_dim: int = 16,
        *,
        latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN,
        latents_std: tuple[float, ...] = WAN21_LATENTS_STD,
        memory_budget_bytes: float = DEFAULT_MEMORY_BUDGET_BYTES,
        tile_overlap: int = 8,
        tile_size: int | None = None,
    ) -> None:
        super().__init__()
        self._set_options(z_dim, latents_mean, latents_std, memory_budget_bytes, tile_overlap, tile_size)
        self.arch = VAEArchitecture(dim=dim, z_dim=z_dim)
        self.encoder = Encoder3d(self.arch)
        self.conv1 = CausalConv3d(z_dim * 2, z_dim * 2, 1)
        self.decoder = Decoder3d(self.arch)
        self.conv2 = CausalConv3d(z_dim, z_dim, 1)

    def _set_options(
        self,
        z_dim: int,
        latents_mean: tuple[float, ...],
        latents_std: tuple[float, ...],
        memory_budget_bytes: float,
        tile_overlap: int,
        tile_size: int | None,
    ) -> None:
        """Check and store the normalisation constants and the tiling options (shared by both VAEs)."""
        if tile_overlap < 0 or (tile_size is not None and tile_size <= tile_overlap):
            raise InputError(
                f"tile_size={tile_size} and tile_overlap={tile_overlap}: the overlap must be >= 0 and smaller "
                "than the tile; raise tile_size or lower tile_overlap"
            )
        if len(latents_mean) != z_dim or len(latents_std) != z_dim:
            raise InputError(
                f"latents_mean/latents_std have {len(latents_mean)}/{len(latents_std)} entries; "
                f"z_dim={z_dim} needs {z_dim} each"
            )
        self.latents_mean = tuple(float(v) for v in latents_mean)
        self.latents_std = tuple(float(v) for v in latents_std)
        self.memory_budget_bytes = memory_budget_bytes
        self.tile_overlap = tile_overlap
        self.tile_size = tile_size

    @property
    def geometry(self) -> LatentGeometry:
        """The latent geometry: stride 4 with frame 0 alone, /8 (2.2: /16) spatial, DiT patch 2, `z_dim` channels."""
        return LatentGeometry(
            temporal_stride=TEMPORAL_FACTOR,
            first_frame_alone=True,
            spatial_factor=self.spatial_factor,
            patch_size=2,
            channels=self.arch.z_dim,
        )

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dim: Width = RELEASED,
        z_dim: Width = RELEASED,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        **options: float,
    ) -> WanVAE:
        """Load ``Wan2.1_VAE.pth`` or ``Wan2.2_VAE.pth`` (or a safetensors copy), or a diffusers ``vae/`` directory.

        Which VAE the file holds is read from its keys: a Wan2.2 VAE (TI2V-5B, 48 channels, /16) comes back as
        a `pusa_fw_wan.vae.wan22.Wan22VAE`; a file that is neither is refused.

        Args:
            path: the checkpoint file or directory (see `vae_checkpoint.read_vae_weights`).
            dim: expected (encoder) base width; ``"released"`` expects the release's (96 for Wan2.1, 160
                for Wan2.2), None reads it from the checkpoint. The Wan2.2 decoder width is always read.
            z_dim: expected latent channels; ``"released"`` expects 16 (Wan2.1) or 48 (Wan2.2), None reads it.
            dtype: compute and weight dtype (latents and video are returned in fp32).
            device: where the model lives.
            **options: `memory_budget_bytes`, `tile_overlap`, `tile_size` (see the class).

        Raises:
            CheckpointError: missing or unreadable file, a file that is neither VAE, missing / unexpected
                keys (listed), wrong shapes, or widths different from the requested ``dim`` / ``z_dim``.
        """
        layout = VAEArchitecture()
        with torch.device("meta"):
            official_keys = list(WanVAE(dim=8, z_dim=layout.z_dim).state_dict())
        weights = read_vae_weights(path, layout, official_keys)
        version = detect_vae_version(weights.state_dict, weights.source)
        if version == "2.2":
            from pusa_fw_wan.vae.wan22 import Wan22VAE

            target: type[WanVAE] = Wan22VAE
        else:
            target = WanVAE
        if not issubclass(target, cls):
            raise CheckpointError(
                f"{weights.source} holds a Wan{version} VAE, not what {cls.__name__} loads; "
                "use WanVAE.from_pretrained, which picks the VAE from the keys"
            )
        return target._load(weights, dim, z_dim, dtype, device, options)

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
        """Build this VAE at the checkpoint's widths and load `weights` into it (strictly)."""
        layout = VAEArchitecture()
        found_dim, found_z = infer_widths(weights.state_dict)
        dim = layout.dim if dim == RELEASED else dim
        z_dim = layout.z_dim if z_dim == RELEASED else z_dim
        check_requested_widths(weights.source, {"dim": (dim, found_dim), "z_dim": (z_dim, found_z)})
        dim, z_dim = dim or found_dim or layout.dim, z_dim or found_z or layout.z_dim
        with torch.device("meta"):
            model = cls(
                dim, z_dim, latents_mean=weights.latents_mean, latents_std=weights.latents_std, **options
            )
        return model._assign_weights(weights, dtype, device)

    def _assign_weights(self, weights: LoadedVAEWeights, dtype: torch.dtype, device: str | torch.device) -> WanVAE:
        """Check `weights` against this (meta) model's keys and shapes, then load them in `dtype` on `device`."""
        expected = {key: value.shape for key, value in self.state_dict().items()}
        check_state_dict(weights.state_dict, expected, weights.source, f"the Wan{self.version} VAE")
        converted = {key: value.to(device=device, dtype=dtype) for key, value in weights.state_dict.items()}
        self.load_state_dict(converted, strict=True, assign=True)
        return self.eval()

    # ------------------------------------------------------------------ public API

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the weights (the compute dtype)."""
        return self.conv2.weight.dtype

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return self.conv2.weight.device

    @torch.no_grad()
    def encode(
        self,
        video: torch.Tensor,
        *,
        tiled: bool | None = None,
        normalize: bool = True,
        on_tile: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Encode a video into latents (the posterior mean).

        Args:
            video: ``[B, 3, T, H, W]`` in [-1, 1], T = 4n + 1, H and W multiples of `spatial_factor`
                (8; 16 for Wan2.2; the Wan pipelines need twice that).
            tiled: None tiles only when the pass would exceed ``memory_budget_bytes``; True always tiles
                (with the budget's tile size, at least one tile); False never tiles.
            normalize: True returns ``(mu - mean) / std`` (what the DiT consumes), False the raw mean.
            on_tile: progress callback ``(tiles_done, tiles_total)``.

        Returns:
            ``[B, z_dim, (T - 1) / 4 + 1, H / f, W / f]`` float32 on the model's device (f = `spatial_factor`).
        """
        check_video(video, self.spatial_factor)
        video = video.to(device=self.device, dtype=self.dtype)
        height, width = video.shape[3] // self.spatial_factor, video.shape[4] // self.spatial_factor
        plan = self._plan(height, width, "encode", tiled)
        if plan is None:
            mu = self._encode_chunks(video)
        else:
            mu = run_tiled(self._encode_chunks, video, plan, self.spatial_factor, 1, on_tile)
        return self._normalize(mu) if normalize else mu

    def encode_image(self, image: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Encode images as one-frame videos: ``[B, 3, H, W]`` in [-1, 1] -> ``[B, z_dim, 1, H/f, W/f]``.

        Keyword arguments are those of `encode`.
        """
        check_image(image)
        return self.encode(image.unsqueeze(2), **kwargs)

    @torch.no_grad()
    def decode(
        self,
        latents: torch.Tensor,
        *,
        tiled: bool | None = None,
        normalized: bool = True,
        clamp: bool = True,
        on_tile: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Decode latents into a video.

        Args:
            latents: ``[B, z_dim, F, h, w]``, normalised as `encode` returns them (unless
                ``normalized=False``).
            tiled: None tiles only when the pass would exceed ``memory_budget_bytes``; True always tiles;
                False never tiles.
            normalized: False when `latents` are the raw posterior space (skips the de-normalisation).
            clamp: clamp the output to [-1, 1] (the official decode does).
            on_tile: progress callback ``(tiles_done, tiles_total)``.

        Returns:
            ``[B, 3, 4 * (F - 1) + 1, f*h, f*w]`` float32 on the model's device (f = `spatial_factor`).
        """
        check_latents(latents, self.arch.z_dim)
        z = latents.to(device=self.device)
        z = self._denormalize(z) if normalized else z.float()
        z = z.to(self.dtype)
        plan = self._plan(z.shape[3], z.shape[4], "decode", tiled)
        if plan is None:
            video = self._decode_chunks(z)
        else:
            video = run_tiled(self._decode_chunks, z, plan, 1, self.spatial_factor, on_tile)
        return video.clamp_(-1.0, 1.0) if clamp else video

    def estimate_bytes(self, height: int, width: int, direction: str = "decode") -> float:
        """Estimated working memory of one untiled pass at ``height x width`` pixels (weights, output excluded)."""
        cells = (height // self.spatial_factor) * (width // self.spatial_factor)
        return self._bytes_per_cell(direction) * cells

    def tile_plan(
        self, height: int, width: int, direction: str = "decode", tiled: bool | None = None
    ) -> TilePlan | None:
        """The tiles a pass at ``height x width`` pixels would use (None: untiled)."""
        return self._plan(height // self.spatial_factor, width // self.spatial_factor, direction, tiled)

    # ------------------------------------------------------------------ internals

    def _bytes_per_cell(self, direction: str) -> float:
        """Estimated working bytes of one untiled ``direction`` pass per latent cell."""
        per_dim = DECODE_BYTES_PER_CELL_PER_DIM if direction == "decode" else ENCODE_BYTES_PER_CELL_PER_DIM
        return per_dim * self.arch.dim * _element_size(self.dtype)

    def _plan(self, height: int, width: int, direction: str, tiled: bool | None) -> TilePlan | None:
        """Tile plan in latent cells for a pass, or None for an untiled pass."""
        if tiled is False:
            return None
        bytes_per_cell = self._bytes_per_cell(direction)
        min_tile = 2 * self.tile_overlap + 1
        size = choose_tile_size(height, width, bytes_per_cell, self.memory_budget_bytes, min_tile)
        if size is None and tiled is None:
            return None
        if self.tile_size is not None:
            size = (self.tile_size, self.tile_size)
        elif size is None:
            forced = max(self.forced_tile_size, min_tile)
            size = (forced, forced)
        return plan_tiles(height, width, *size, overlap=self.tile_overlap)

    def _encode_chunks(self, video: torch.Tensor) -> torch.Tensor:
        """Untiled chunked encode: ``[B, 3, T, H, W]`` -> raw posterior mean ``[B, z, F, H/8, W/8]`` fp32."""
        cache = CausalCache()
        num_frames = video.shape[2]
        bounds = [(0, 1)] + [(s, s + TEMPORAL_FACTOR) for s in range(1, num_frames, TEMPORAL_FACTOR)]
        features = torch.cat([self.encoder(video[:, :, start:stop], cache) for start, stop in bounds], dim=2)
        mu, _log_var = self.conv1(features).chunk(2, dim=1)
        return mu.float()

    def _decode_chunks(self, z: torch.Tensor) -> torch.Tensor:
        """Untiled chunked decode: ``[B, z, F, h, w]`` (raw space) -> unclamped ``[B, 3, T, 8h, 8w]`` fp32."""
        cache = CausalCache()
        x = self.conv2(z)
        batch, _, num_latents, height, width = x.shape
        num_frames = TEMPORAL_FACTOR * (num_latents - 1) + 1
        video = torch.empty(
            batch, 3, num_frames, height * SPATIAL_FACTOR, width * SPATIAL_FACTOR, device=z.device
        )
        for index in range(num_latents):
            frames = self.decoder(x[:, :, index : index + 1], cache)
            start = 0 if index == 0 else TEMPORAL_FACTOR * (index - 1) + 1
            video[:, :, start : start + frames.shape[2]] = frames.float()
        return video

    def _scale(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, 1 / std)`` as ``[1, z, 1, 1, 1]`` fp32 tensors, like the official ``scale``."""
        mean = torch.tensor(self.latents_mean, dtype=torch.float32, device=device)
        inv_std = 1.0 / torch.tensor(self.latents_std, dtype=torch.float32, device=device)
        return mean.view(1, -1, 1, 1, 1), inv_std.view(1, -1, 1, 1, 1)

    def _normalize(self, mu: torch.Tensor) -> torch.Tensor:
        mean, inv_std = self._scale(mu.device)
        return (mu - mean) * inv_std

    def _denormalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, inv_std = self._scale(z.device)
        return z.float() / inv_std + mean


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()
