"""The Wan DiT: config, model, blocks, RoPE, checkpoint loading and the Wan2.2 experts backbone."""

from __future__ import annotations

from pusa_fw_wan.dit.config import WanConfig
from pusa_fw_wan.dit.model import WanDiT

__all__ = ["WanConfig", "WanDiT"]
