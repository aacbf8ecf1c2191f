"""Wan's side of training: its training adapter, dataset preparation, the latent cache and LoRA export.

The trainer itself is the backbone-agnostic ``pusa_fw_train`` plugin; it reaches Wan through
`WanTrainAdapter` (registered for ``wan2.1-t2v``; it trains Wan2.1 T2V and Wan2.2 TI2V-5B checkpoints alike,
told apart by the checkpoint) or `WanTI2VTrainAdapter` (TI2V-5B only). Heavy modules are imported on first
attribute access.
"""

from __future__ import annotations

from pusa_fw.lazy import lazy_exports

_EXPORTS = {
    "WanTrainAdapter": ".adapter",
    "WanTI2VTrainAdapter": ".adapter",
    "PUSA_LORA_TARGETS": ".adapter",
    "LatentCache": ".cache",
    "export_lora": ".export",
    "ExportedLora": ".export",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
