"""The Wan2.1 and Wan2.2 VAEs: networks, checkpoint reading, input checks and spatial tiling."""

from __future__ import annotations

from pusa_fw_wan.vae.model import WanVAE
from pusa_fw_wan.vae.wan22 import Wan22VAE

__all__ = ["Wan22VAE", "WanVAE"]
