"""The model's own defaults for the `GenerateConfig` fields a run does not set.

`GenerateConfig`'s field defaults are Wan2.1 T2V's. When ``--model`` holds another Wan DiT (Wan2.2 TI2V-5B),
every one of its defaults (`pusa_fw_wan.pipeline.model_defaults`) replaces the field default unless the
run set that field: by flag, run-file key or ``--preset``. For TI2V-5B ``--task i2v`` without a strength
or policy holds the image clean (strength 1), as the official image-to-video does.
"""

from __future__ import annotations

from typing import Any

from pusa_fw.errors import CheckpointError

from pusa_fw_wan.cli.generate_config import GenerateConfig
from pusa_fw_wan.pipeline.model_defaults import ModelDefaults, defaults_for_checkpoint

__all__ = ["I2V_HOLD_FIELDS", "model_defaults_of", "with_model_defaults"]

I2V_HOLD_FIELDS = ("strength", "policy", "policy_params")
"""Task parameters that set how ``i2v`` holds its image: any of them given keeps the user's choice."""


def model_defaults_of(config: GenerateConfig) -> ModelDefaults | None:
    """The defaults of the DiT ``config.model`` names, or None when they cannot be read here.

    None for no ``--model``, a path that does not exist, a folder a registered model format claims, or an
    unreadable checkpoint: the run then reports those when it resolves and loads the models.
    """
    if config.model is None:
        return None
    from pusa_fw_wan.pipeline.loading import find_model_format

    model = config.model.expanduser()
    if not model.exists() or find_model_format(model if model.is_dir() else model.parent) is not None:
        return None
    try:
        return defaults_for_checkpoint(model)
    except CheckpointError:
        return None


def with_model_defaults(config: GenerateConfig) -> GenerateConfig:
    """`config` with the model's defaults in every field the run did not set (``model_fields_set``)."""
    defaults = model_defaults_of(config)
    if defaults is None:
        return config
    given = config.model_fields_set
    updates: dict[str, Any] = {
        name: value for name, value in defaults.generate_values().items() if name not in given
    }
    if (defaults.i2v_strength is not None and config.task == "i2v"
            and not any(name in config.task_params for name in I2V_HOLD_FIELDS)):
        updates["task_params"] = {**config.task_params, "strength": defaults.i2v_strength}
    return config.model_copy(update=updates) if updates else config
