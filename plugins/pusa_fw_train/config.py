"""`TrainConfig`: one validated description of a training run (a TOML file, flags, or Python).

A TOML run file uses the field names, with one table per section::

    output_dir = "runs/pusa-lora"
    max_steps = 1200
    mode = "lora"                       # or "full"
    [model]
    path = "Wan2.1-T2V-14B"
    [data]
    source = "cache/"                   # a registered source name, a cache directory, or "module:factory"
    batch_size = 1
    [ptss]
    p_async = 0.5
    held_probability = 0.2
    [optimizer]
    lr = 1e-5
    schedule = "cosine"
    warmup_steps = 50

Relative paths in a run file are relative to the file's directory. The validated config is saved as
``config.json`` at the run root and in every checkpoint; resuming compares against it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from pusa_fw.cli_params import one_line_validation_error
from pusa_fw.errors import InputError
from pusa_fw.ptss import PTSS

from .config_sections import (
    MAX_SEED,
    SECTION_CONFIG,
    CheckpointSection,
    DataSection,
    DatasetEntry,
    LoggingSection,
    LossSection,
    LoraSection,
    ModelSection,
    OptimizerSection,
    ValidationSection,
)
from .memory_options import WeightsDtype, check_memory_options

__all__ = [
    "CheckpointSection",
    "DataSection",
    "DatasetEntry",
    "LoggingSection",
    "LossSection",
    "LoraSection",
    "ModelSection",
    "OptimizerSection",
    "TrainConfig",
    "ValidationSection",
    "config_differences",
    "load_train_config",
    "validate_train_config",
]

MAX_STEPS = 2**31 - 1
"""Largest ``max_steps`` (beyond it step counters and schedules stop being meaningful)."""

RESUMABLE_CHANGES: tuple[str, ...] = (
    "output_dir",
    "max_steps",
    "checkpoint",
    "logging",
    "collective_timeout_s",
    "main_rank_timeout_s",
    "block_swap",
    "activation_offload",
)
"""Top-level fields that may change when a run is resumed (everything else must match the saved config;
``block_swap`` and ``activation_offload`` only move frozen weights or saved activations between host and
device, the arithmetic is the same)."""

RESUMABLE_PREFIXES: tuple[str, ...] = ("validation.render_", "data.prefetch")
"""Dotted-key prefixes that may change on resume too (renders never touch the training trajectory)."""

class TrainConfig(BaseModel):
    """Everything that defines a training run. See the module docstring for the TOML layout."""

    model_config = SECTION_CONFIG
    output_dir: str = Field(description="run directory (config.json, log.jsonl, checkpoints/)")
    max_steps: int = Field(ge=1, le=MAX_STEPS, description="optimizer steps of the whole run")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the weights' init, the data order and PTSS")
    mode: Literal["lora", "full"] = "lora"
    model: ModelSection
    lora: LoraSection = LoraSection()
    data: DataSection
    ptss: PTSS = PTSS()
    loss: LossSection = LossSection()
    optimizer: OptimizerSection = OptimizerSection()
    precision: Literal["fp32", "bf16"] = Field("bf16", description="bf16: autocast with fp32 master weights")
    gradient_checkpointing: bool | None = Field(
        None, description="recompute each block in the backward (None: on for a LoRA when the model can)"
    )
    weights_dtype: WeightsDtype = Field(
        "auto", description="storage dtype of the frozen base (auto: bf16 for a LoRA under bf16, else fp32)"
    )
    block_swap: int = Field(0, ge=0, description="blocks whose frozen weights stay on the host (LoRA)")
    activation_offload: bool = Field(
        False, description="keep the checkpointed block inputs in host memory until the backward"
    )
    token_chunks: int = Field(
        1, ge=1, le=4096,
        description="checkpoint each block's per-token parts over this many groups of frames (1: off)",
    )
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="EMA of the trained tensors (LoRA: of A and B separately); None: off"
    )
    validation: ValidationSection = ValidationSection()
    checkpoint: CheckpointSection = CheckpointSection()
    logging: LoggingSection = LoggingSection()
    distributed: Literal["auto", "none", "ddp", "fsdp"] = "auto"
    device: str = Field(
        "auto", description="torch device of one process (auto: cuda when available; torchrun: the local GPU)"
    )

    @model_validator(mode="after")
    def _exports_need_a_lora(self) -> TrainConfig:
        if self.checkpoint.export_lora_every and self.mode != "lora":
            raise ValueError("checkpoint.export_lora_every exports LoRA files; it needs mode = 'lora'")
        if self.checkpoint.export_ema and self.ema_decay is None:
            raise ValueError("checkpoint.export_ema needs ema_decay (the run keeps no EMA)")
        check_memory_options(self)
        return self
    collective_timeout_s: int = Field(
        600, ge=1, description="seconds a device collective (a gradient reduce, an all-gather) may wait"
    )
    main_rank_timeout_s: int = Field(
        7200,
        ge=1,
        description="seconds the other ranks wait (host barrier, gloo) while rank 0 saves, renders or loads "
        "the render encoders",
    )


def validate_train_config(values: dict[str, Any]) -> TrainConfig:
    """Validate `values` into a `TrainConfig`; errors become one `InputError` line naming each field."""
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as error:
        raise InputError(f"invalid training config: {one_line_validation_error(error)}") from None


def _resolve(base: Path, value: Any) -> Any:
    if not isinstance(value, str) or Path(value).expanduser().is_absolute():
        return value
    return str(base / value)


def load_train_config(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a TOML (or config.json) run file, apply dotted `overrides`, and validate.

    Args:
        path: the run file; relative paths inside it are relative to its directory.
        overrides: ``{"optimizer.lr": 1e-4, ...}`` applied on top (command-line flags).

    Raises:
        InputError: a missing or unreadable file, or an invalid config.
    """
    import tomllib

    file = Path(path).expanduser()
    if not file.is_file():
        raise InputError(f"training config {str(file)!r} does not exist; check the --config path")
    try:
        text = file.read_text(encoding="utf-8")
        values = json.loads(text) if file.suffix == ".json" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"cannot read training config {str(file)!r}: {error}") from None
    base = file.resolve().parent
    if "output_dir" in values:
        values["output_dir"] = _resolve(base, values["output_dir"])
    for section, key in (("model", "path"), ("lora", "init_from")):
        table = values.get(section)
        if isinstance(table, dict) and table.get(key) is not None:
            table[key] = _resolve(base, table[key])
    data = values.get("data")
    tables = [data, *(data.get("datasets") or [])] if isinstance(data, dict) else []
    for table in tables:
        source = table.get("source") if isinstance(table, dict) else None
        if isinstance(source, str) and (base / source).exists():
            table["source"] = _resolve(base, source)
    if isinstance(data, dict) and data.get("empty_context") is not None:
        data["empty_context"] = _resolve(base, data["empty_context"])
    return validate_train_config(apply_overrides(values, overrides or {}))


def apply_overrides(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``"optimizer.lr"``) in a nested dict; returns a new dict."""
    result = json.loads(json.dumps(values))
    for dotted, value in overrides.items():
        *sections, key = dotted.split(".")
        table = result
        for section in sections:
            nested = table.setdefault(section, {})
            if not isinstance(nested, dict):
                raise InputError(f"cannot set {dotted!r}: {section!r} is not a table")
            table = nested
        table[key] = value
    return result


def _flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(values, dict):
        flat: dict[str, Any] = {}
        for key, value in values.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: values}


def config_differences(saved: TrainConfig, given: TrainConfig) -> list[str]:
    """The settings that differ between a run's saved config and a new one, ignoring `RESUMABLE_CHANGES`.

    Returns:
        ``"optimizer.lr: run has 1e-05, given 0.0001"`` strings, sorted by field.
    """
    old = _flatten(saved.model_dump(mode="json"))
    new = _flatten(given.model_dump(mode="json"))
    differences = []
    for key in sorted(set(old) | set(new)):
        if key.split(".")[0] in RESUMABLE_CHANGES or key.startswith(RESUMABLE_PREFIXES):
            continue
        if old.get(key) != new.get(key):
            differences.append(f"{key}: run has {old.get(key)!r}, given {new.get(key)!r}")
    return differences
