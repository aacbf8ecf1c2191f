"""The Wan2.1 VAE: networks, checkpoint reading, input checks and spatial tiling."""

from __future__ import annotations

from pusa_fw_wan.vae.model import WanVAE

__all__ = ["WanVAE"]
