"""The FAFM trainer of pusa-fw, a first-party plugin: any registered backbone, one config, exact resume.

A backbone's plugin tells the trainer how to build, shard, render and export its model through a
`TrainAdapter` (hook ``register_train_adapters``); the data comes from `pusa_fw.training_data` sources
(hook ``register_training_sources``) and the loss is the core's FAFM forward. ``pusa-fw train`` is this
plugin's command. Heavy modules are imported on first attribute access, so importing the package is cheap.
"""

from __future__ import annotations

from pusa_fw.lazy import lazy_exports

_EXPORTS = {
    "TrainAdapter": ".adapter",
    "get_train_adapter": ".adapter",
    "TrainConfig": ".config",
    "load_train_config": ".config",
    "validate_train_config": ".config",
    "Trainer": ".trainer",
    "TrainResult": ".trainer",
    "register_source": ".sources",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
