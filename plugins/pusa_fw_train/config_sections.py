"""The sections of a `TrainConfig` (``[model]``, ``[lora]``, ``[data]``, ``[loss]``, ``[optimizer]``,
``[validation]``, ``[checkpoint]``, ``[logging]``): one frozen pydantic model each, unknown keys refused."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_SEED = 2**63 - 2
"""Largest seed (torch generators take 64-bit seeds; some streams add 1)."""

SECTION_CONFIG = ConfigDict(frozen=True, extra="forbid")
"""Every section (and the config itself) is immutable and refuses unknown keys."""


class ModelSection(BaseModel):
    """The base model: a registered `backbone`; a checkpoint `path` or a random-init `architecture`."""

    model_config = SECTION_CONFIG
    backbone: str = Field("wan2.1-t2v", description="backbone name with a registered training adapter")
    path: str | None = Field(None, description="checkpoint directory or file of the backbone")
    architecture: dict[str, Any] | None = Field(
        None, description="architecture fields of a random-init model (the backbone's config, e.g. WanConfig)"
    )
    init_seed: int = Field(0, description="seed of the random init (architecture only)")

    @model_validator(mode="after")
    def _one_source(self) -> ModelSection:
        if (self.path is None) == (self.architecture is None):
            raise ValueError(
                "give exactly one of model.path (a checkpoint) or model.architecture (random init)"
            )
        return self


class LoraSection(BaseModel):
    """LoRA adapters injected through peft (mode = "lora")."""

    model_config = SECTION_CONFIG
    rank: int = Field(512, ge=1, description="LoRA rank r")
    alpha: float = Field(512.0, gt=0, description="LoRA alpha (scale alpha / r)")
    targets: tuple[str, ...] | None = Field(
        None, min_length=1, description="Linear module name suffixes; None: the backbone adapter's defaults"
    )
    init_from: str | None = Field(
        None, description="continue from this LoRA file (any format the loader reads)"
    )


class DatasetEntry(BaseModel):
    """One dataset of a mix: a source, its options, and how many times it is listed per epoch."""

    model_config = SECTION_CONFIG
    source: str = Field(description="registered source name, cache directory, or 'module:factory'")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the source")
    repeats: int = Field(1, ge=1, description="times each sample is listed per epoch (its weight in the mix)")


class DataSection(BaseModel):
    """Where samples come from and how they are batched: one `source`, or several `datasets`."""

    model_config = SECTION_CONFIG
    source: str | None = Field(
        None, description="registered source name, cache directory, or 'module:factory'"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the source")
    datasets: tuple[DatasetEntry, ...] = Field(
        (), description="several datasets with repeats (instead of source)"
    )
    batch_size: int = Field(1, ge=1, description="samples per global micro-batch (all ranks together)")
    prefetch: int = Field(2, ge=0, description="micro-batches a background thread loads ahead (0: none)")
    caption_dropout: float = Field(
        0.0, ge=0, le=1, description="probability of training a sample unconditioned"
    )
    empty_context: str | None = Field(
        None, description="empty-prompt embedding (.safetensors, tensor 'context'); default: the source's"
    )

    @model_validator(mode="after")
    def _one_kind_of_source(self) -> DataSection:
        if (self.source is None) == (not self.datasets):
            raise ValueError("give exactly one of data.source or data.datasets")
        if self.datasets and self.options:
            raise ValueError("data.options belongs to data.source; give each dataset its own options")
        return self


class LossSection(BaseModel):
    """FAFM loss options."""

    model_config = SECTION_CONFIG
    frame_weighting: Literal["none", "bsmntw"] = Field(
        "none", description="per-frame weight of each error (bsmntw: mean 1 under the run's PTSS law)"
    )


class OptimizerSection(BaseModel):
    """AdamW and its learning-rate schedule."""

    model_config = SECTION_CONFIG
    lr: float = Field(1e-5, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    decay_steps: int | None = Field(
        None, ge=1, description="steps the cosine spans (None: max_steps; kept when resuming a longer run)"
    )
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine floor as a fraction of lr")
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip the global grad norm; None: no clipping")
    grad_accumulation: int = Field(1, ge=1, description="micro-batches per optimizer step")


class ValidationSection(BaseModel):
    """Held-out FAFM loss at fixed per-frame sigmas taken from task plans."""

    model_config = SECTION_CONFIG
    every: int = Field(0, ge=0, description="validate every N steps (0: never)")
    plans: tuple[str, ...] = ("t2v", "i2v", "start-end", "extension")
    num_samples: int = Field(2, ge=1, description="held-out samples (the last ones of the source)")
    sigma_bins: int = Field(5, ge=1, description="equal-width sigma bins of the per-bin loss")
    seed: int = Field(1234, ge=0, le=MAX_SEED, description="seed of the validation noise")
    render_tasks: tuple[str, ...] = Field(
        (), description="registered tasks to render (mp4 + contact sheet) from the current/EMA weights"
    )
    render_every: int | None = Field(None, ge=1, description="render every N steps (None: validation.every)")
    render_num_steps: int = Field(4, ge=1, description="sampler steps of a render")
    render_seed: int = Field(0, ge=0, le=MAX_SEED, description="noise seed of every render")
    render_prompts: tuple[str, ...] = Field(
        (), description="sample prompts encoded by the backbone's text encoder (default: a held-out sample's)"
    )
    render_negative_prompt: str = Field("", description="negative prompt of classifier-free guidance")
    render_cfg_scale: float = Field(1.0, ge=0, description="text guidance scale of renders (1: no CFG pass)")

    @property
    def render_interval(self) -> int:
        """Steps between renders (0: never)."""
        if not self.render_tasks:
            return 0
        return self.render_every if self.render_every is not None else self.every

    @model_validator(mode="after")
    def _render_interval(self) -> ValidationSection:
        if self.render_tasks and self.render_interval == 0:
            raise ValueError("validation.render_tasks needs validation.render_every or validation.every > 0")
        return self


class CheckpointSection(BaseModel):
    """When to save and how many checkpoints to keep."""

    model_config = SECTION_CONFIG
    every: int = Field(0, ge=0, description="save every N steps (0: only at the end)")
    keep_last: int | None = Field(3, ge=1, description="keep the newest N checkpoints; None: keep all")
    stop_signal: Literal["SIGTERM", "SIGUSR1", "SIGUSR2", "none"] = Field(
        "SIGTERM",
        description="on this signal, drop the unfinished step at the next micro-step, save the last finished "
        "one and stop (SIGUSR1 with sbatch --signal=USR1@300 gives the save minutes; none: off)",
    )
    format: Literal["auto", "safetensors", "dcp"] = Field(
        "auto", description="auto: DCP shards (each rank its own) for a full FSDP2 run on several ranks"
    )
    export_lora_every: int = Field(
        0, ge=0, description="LoRA: also write <run>/exports/lora-step-N.safetensors every N steps (0: never)"
    )
    export_layout: str = Field("comfyui", description="key layout of those exports (the backbone adapter's)")
    export_ema: bool = Field(False, description="export the EMA weights instead of the trained ones")

    @model_validator(mode="before")
    @classmethod
    def _legacy_save_on_sigterm(cls, values: Any) -> Any:
        """Configs written before ``stop_signal`` said ``save_on_sigterm = true|false``; read them alike."""
        if isinstance(values, dict) and "save_on_sigterm" in values:
            values = dict(values)
            legacy = values.pop("save_on_sigterm")
            if "stop_signal" in values:
                raise ValueError("give checkpoint.stop_signal only (save_on_sigterm is its old name)")
            if not isinstance(legacy, bool):
                raise ValueError(f"checkpoint.save_on_sigterm must be true or false, got {legacy!r}")
            values["stop_signal"] = "SIGTERM" if legacy else "none"
        return values


class LoggingSection(BaseModel):
    """Metrics logs (JSONL always; TensorBoard when installed)."""

    model_config = SECTION_CONFIG
    every: int = Field(10, ge=1, description="log every N optimizer steps (each log waits for the device)")
    tensorboard: bool = True
