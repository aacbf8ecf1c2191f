"""pusa-fw plugin for the Wan2.1 / Wan2.2 family: DiT backbone, VAE, umT5 text encoder, LoRA.

Heavy modules are imported on first attribute access, so ``import pusa_fw_wan`` (and the plugin hooks)
stay cheap and work without transformers or peft installed.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "WanConfig": ".dit.config",
    "WanDiT": ".dit.model",
    "WanVAE": ".vae.model",
    "WanTextEncoder": ".text.encoder",
    "LoraSpec": ".lora.apply",
    "apply_loras": ".lora.apply",
    "WanExpertsBackbone": ".dit.experts",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pusa_fw_wan' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
