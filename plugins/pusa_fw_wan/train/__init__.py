"""Training for the Wan plugin: data sources, dataset preparation, config, FAFM trainer, checkpoints, export.

Heavy modules are imported on first attribute access, so importing the package stays cheap.
"""

from __future__ import annotations

from pusa_fw.lazy import lazy_exports

_EXPORTS = {
    "TrainingSample": "pusa_fw.training_data",
    "TrainingSource": "pusa_fw.training_data",
    "InMemorySource": "pusa_fw.training_data",
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

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
