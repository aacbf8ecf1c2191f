"""pusa-fw plugin for the Wan2.1 / Wan2.2 family: DiT backbone, VAE, umT5 text encoder, LoRA.

Heavy modules are imported on first attribute access, so ``import pusa_fw_wan`` (and the plugin hooks)
stay cheap and work without transformers or peft installed.
"""

from __future__ import annotations

from pusa_fw.lazy import lazy_exports

_EXPORTS = {
    "WanConfig": ".dit.config",
    "WanDiT": ".dit.model",
    "WanVAE": ".vae.model",
    "WanTextEncoder": ".text.encoder",
    "LoraSpec": ".lora.apply",
    "apply_loras": ".lora.apply",
    "WanExpertsBackbone": ".dit.experts",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
