"""Training for the Wan plugin: data sources, dataset preparation, config, FAFM trainer, checkpoints, export.

Heavy modules are imported on first attribute access, so importing the package stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainingSample": ".source",
    "TrainingSource": ".source",
    "InMemorySource": ".source",
    "LatentCache": ".cache",
    "TrainConfig": ".config",
    "load_train_config": ".config",
    "validate_train_config": ".config",
    "Trainer": ".trainer",
    "TrainResult": ".trainer",
    "register_source": ".sources",
    "export_lora": ".export",
    "ExportedLora": ".export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pusa_fw_wan.train' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
