"""Wan's side of training: its training adapter, dataset preparation, the latent cache and LoRA export.

The trainer itself is the backbone-agnostic ``pusa_fw_train`` plugin; it reaches Wan through
`WanTrainAdapter` (registered for ``wan2.1-t2v``). Heavy modules are imported on first attribute access.
"""

from __future__ import annotations

from pusa_fw.lazy import lazy_exports

_EXPORTS = {
    "WanTrainAdapter": ".adapter",
    "PUSA_LORA_TARGETS": ".adapter",
    "LatentCache": ".cache",
    "export_lora": ".export",
    "ExportedLora": ".export",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
