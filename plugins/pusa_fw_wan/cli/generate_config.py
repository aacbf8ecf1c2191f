"""`GenerateConfig`: every setting of ``pusa-fw generate``, for the flags and for ``--config run.toml`` alike.

The command-line flags are derived from the fields (``num_frames`` -> ``--num-frames``); a TOML run file
uses the field names as keys, and a ``[task]`` table with ``name = "..."`` plus the task's parameters::

    prompt = "a cat walks on the beach"
    num_frames = 81
    keyframe = ["0:first.png", "40:middle.png:0.9"]     # or [{frame = 0, path = "first.png"}, ...]
    lora = ["pusa_v1.safetensors:1.4"]
    [task]
    name = "keyframes"
    policy = "multiplier"

Relative paths in a run file are relative to the file's directory; on the command line, to the current
directory. Flags given on the command line override the run file. ``--preset NAME`` (key ``preset``)
fills in a named recipe's fields (`presets.PRESETS`, e.g. ``lightx2v``: 4 steps, shift 5, cfg 1, euler);
any of those fields given explicitly, by flag or run-file key, overrides the preset's value. ``--cache NAME
--cache-params '{"threshold": 0.2}'`` (keys ``cache``, ``cache_params = {threshold = 0.2}``) picks a step cache.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pusa_fw.cli_params import one_line_validation_error
from pusa_fw.errors import InputError
from pusa_fw.guidance import Guidance
from pusa_fw.seeding import MAX_SEED

from pusa_fw_wan.cli.presets import PRESETS, apply_preset, check_preset_name

__all__ = [
    "GenerateConfig",
    "KeyframeInput",
    "LoraInput",
    "PromptAt",
    "build_cache",
    "load_run_file",
    "validate_config",
]

MAX_VIDEO_SIDE = 4096
"""Largest height or width generate takes (Wan is trained at 480p and 720p; 4K is already far beyond)."""

_FROZEN = ConfigDict(frozen=True, extra="forbid")

FIELD_ALIASES: dict[str, str] = {"steps": "num_steps"}
"""Older spellings still accepted (as ``--steps`` and as run-file keys) -> the field they set."""


def rename_aliases(values: dict[str, Any], where: str) -> dict[str, Any]:
    """`values` with old spellings renamed to their field; both spellings at once is an `InputError`."""
    renamed = dict(values)
    for alias, name in FIELD_ALIASES.items():
        if alias in renamed:
            if name in renamed:
                raise InputError(f"{where}: give {name} or its alias {alias}, not both")
            renamed[name] = renamed.pop(alias)
    return renamed


def _strength_suffix(text: str) -> tuple[str, float | None]:
    """Split ``'PATH:1.4'`` into ``('PATH', 1.4)``; a suffix that is not a number stays part of the path."""
    head, separator, tail = text.rpartition(":")
    if separator and head:
        try:
            value = float(tail)
        except ValueError:
            return text, None
        if math.isfinite(value):
            return head, value
    return text, None


class KeyframeInput(BaseModel):
    """An image held at a pixel-frame position: ``--keyframe FRAME:PATH[:STRENGTH]``."""

    model_config = _FROZEN

    frame: int = Field(ge=0, description="0-based pixel-frame position")
    path: Path = Field(description="image file")
    strength: float | None = Field(None, ge=0, le=1, description="hold strength (default: the task's)")

    @model_validator(mode="before")
    @classmethod
    def _parse_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        frame, separator, rest = value.partition(":")
        if not separator or not rest or not frame.strip().lstrip("-").isdigit():
            raise ValueError(f"{value!r} is not FRAME:PATH[:STRENGTH] (e.g. 40:mid.png or 40:mid.png:0.9)")
        path, strength = _strength_suffix(rest)
        return {"frame": int(frame), "path": path, "strength": strength}


class LoraInput(BaseModel):
    """A LoRA file and its strength: ``--lora PATH[:STRENGTH]``."""

    model_config = _FROZEN

    path: Path = Field(description="LoRA file (.safetensors, .pt, .pth, .bin)")
    strength: float = Field(1.0, description="multiplier on the file's delta (Pusa V1: 1.4)")

    @model_validator(mode="before")
    @classmethod
    def _parse_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        path, strength = _strength_suffix(value)
        return {"path": path} if strength is None else {"path": path, "strength": strength}


class PromptAt(BaseModel):
    """A prompt that applies from a pixel frame on: ``--prompt-at FRAME:TEXT`` (rolling and loop tasks)."""

    model_config = _FROZEN

    frame: int = Field(ge=0, description="0-based pixel frame where this prompt starts")
    text: str = Field(description="the prompt")

    @model_validator(mode="before")
    @classmethod
    def _parse_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        frame, separator, text = value.partition(":")
        if not separator or not frame.strip().isdigit():
            raise ValueError(f"{value!r} is not FRAME:TEXT (e.g. '80:the cat jumps')")
        return {"frame": int(frame), "text": text}


class GenerateConfig(BaseModel):
    """Everything ``pusa-fw generate`` needs; the flags are ``--`` + the field name with dashes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str = Field("t2v", description="registered task name (see `pusa-fw tasks`)")
    task_params: dict[str, Any] = Field(default_factory=dict, description="the task's parameters")
    prompt: str | None = Field(None, description="the prompt (required unless --prompt-at 0:TEXT is given)")
    negative_prompt: str | None = Field(None, description="negative prompt (default: Wan2.1's)")
    prompt_at: list[PromptAt] = Field(
        default_factory=list, description="FRAME:TEXT, a prompt from that frame on (rolling, loop)"
    )
    image: Path | None = Field(None, description="image held as the first frame (i2v, rolling, loop)")
    video: Path | None = Field(None, description="given clip (extension, transition clip A, v2v)")
    video_b: Path | None = Field(None, description="second clip (transition clip B)")
    keyframe: list[KeyframeInput] = Field(default_factory=list, description="FRAME:PATH[:STRENGTH] images")
    keyframe_encoding: Literal["image", "video"] = Field(
        "image", description="encode keyframes as one-frame latents (Pusa) or as a still 4-frame chunk"
    )
    num_frames: int = Field(81, ge=1, description="pixel frames, 4n+1 (TI2V-5B default: 121)")
    height: int = Field(
        480, ge=1, le=MAX_VIDEO_SIDE,
        description="pixel height, a multiple of the codec's (Wan2.1 16, TI2V-5B 32; TI2V-5B default: 704)",
    )
    width: int = Field(
        832, ge=1, le=MAX_VIDEO_SIDE,
        description="pixel width, a multiple of the codec's (Wan2.1 16, TI2V-5B 32; TI2V-5B default: 1280)",
    )
    preset: str | None = Field(
        None,
        description="sampling recipe filling the fields it names unless given explicitly: "
        + "; ".join(f"{preset.name} ({preset.summary.split(': ', 1)[-1]})" for preset in PRESETS.values()),
    )
    num_steps: int = Field(10, ge=1, description="denoising steps (alias: --steps; TI2V-5B default: 50)")
    shift: float = Field(5.0, gt=0, allow_inf_nan=False, description="sigma shift of the schedule")
    cfg: float = Field(3.0, ge=0, description="classifier-free guidance scale (1 = off; TI2V-5B default: 5)")
    history_guidance: float = Field(
        1.0, ge=0, description="history guidance scale: held/history frames vs noise (1 = off)"
    )
    sampler: str = Field(
        "euler", description="registered sampler (euler, unipc, lcm; TI2V-5B default: unipc)"
    )
    cache: str = Field("none", description="step cache (none, teacache, framecache; see `pusa-fw plugins`)")
    cache_params: dict[str, Any] = Field(
        default_factory=dict, description="the cache's parameters as a JSON object, e.g. '{\"threshold\": 0.2}'"
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="noise seed, 0 .. 2**64 - 1")
    model: Path | None = Field(
        None,
        description="Wan2.1 T2V or Wan2.2 TI2V-5B checkpoint directory or file (its defaults apply where unset)",
    )
    vae: Path | None = Field(
        None, description="VAE file (default: Wan2.1_VAE or Wan2.2_VAE .pth/.safetensors in --model)"
    )
    text_encoder: Path | None = Field(
        None, description="umT5 file (default: models_t5_umt5-xxl-enc-bf16.pth/.safetensors in --model)"
    )
    tokenizer: Path | None = Field(
        None, description="tokenizer directory (default: tokenizer/ or google/umt5-xxl/ beside the encoder)"
    )
    lora: list[LoraInput] = Field(default_factory=list, description="PATH[:STRENGTH] LoRA files")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="DiT and text-encoder dtype (auto: bfloat16 on GPU, float32 on CPU)"
    )
    weights_dtype: Literal["auto", "float32", "bfloat16", "float16", "float8_e4m3fn", "float8_e5m2"] = Field(
        "auto",
        description="storage dtype of the DiT's large linears, computed in --dtype (auto: an fp8 file stays "
        "fp8, else --dtype)",
    )
    device: str = Field("auto", description="cpu, cuda, cuda:1, ... (auto: cuda when available)")
    offload: Literal["none", "model", "block"] = Field(
        "none", description="keep weights on the CPU: per model while in use, or per DiT block"
    )
    ulysses: int = Field(
        1, ge=1, description="sequence-parallel ranks under torchrun (divides the DiT heads: 14B 40, 1.3B 12)"
    )
    fsdp: bool = Field(False, description="shard the DiT weights per block over all torchrun ranks (FSDP2)")
    cfg_parallel: bool = Field(False, description="prompt and negative-prompt branches on two rank groups")
    fsdp_text: bool = Field(False, description="shard the umT5 text encoder per block over all ranks (FSDP2)")
    out: Path | None = Field(
        None, description="output .mp4 (default: <task>_seed<seed>.mp4); a .json sidecar beside it"
    )
    save_latents: Path | None = Field(
        None, description="also write the final latents [1, C, N, h, w] (the DiT's normalised space) to this "
        ".safetensors file (tensor 'latents')"
    )
    plan_png: Path | None = Field(
        None, description="also write the plan's frames-by-steps heatmap of the whole timeline to this .png file"
    )
    fps: int = Field(
        16, ge=1, description="frame rate of the output and of the input clips (TI2V-5B default: 24)"
    )
    resize: Literal["center-crop", "letterbox"] = Field("center-crop", description="how inputs are fitted")
    prompt_cache: bool = Field(True, description="cache prompt embeddings under $XDG_CACHE_HOME/pusa_fw")
    profile: bool = Field(False, description="print the time split (text, denoise, decode)")
    progress: bool | None = Field(None, description="progress bar (default: when stderr is a terminal)")

    @model_validator(mode="before")
    @classmethod
    def _old_spellings(cls, values: Any) -> Any:
        return apply_preset(rename_aliases(values, "run")) if isinstance(values, dict) else values

    @field_validator("cache_params", mode="before")
    @classmethod
    def _cache_params_json(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ValueError(f"{value!r} is not a JSON object; write e.g. '{{\"threshold\": 0.2}}'")
        return parsed

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        return check_preset_name(value)

    def guidance(self) -> Guidance:
        """The pipeline's `Guidance` from ``cfg`` and ``history_guidance``."""
        return Guidance(cfg_scale=self.cfg, history_scale=self.history_guidance)

    def output_path(self) -> Path:
        """The output video path (``--out``, or ``<task>_seed<seed>.mp4`` in the current directory)."""
        return self.out if self.out is not None else Path(f"{self.task}_seed{self.seed}.mp4")

    def resolved_against(self, base: Path) -> GenerateConfig:
        """A copy whose relative paths are taken relative to `base` (the run file's directory)."""

        def fix(path: Path | None) -> Path | None:
            return None if path is None or path.expanduser().is_absolute() else base / path

        updates: dict[str, Any] = {
            name: fix(getattr(self, name))
            for name in ("image", "video", "video_b", "model", "vae", "text_encoder", "tokenizer", "out",
                         "save_latents", "plan_png")
            if fix(getattr(self, name)) is not None
        }
        updates["keyframe"] = [k.model_copy(update={"path": fix(k.path) or k.path}) for k in self.keyframe]
        updates["lora"] = [
            item.model_copy(update={"path": fix(item.path) or item.path}) for item in self.lora
        ]
        return self.model_copy(update=updates)


def build_cache(config: GenerateConfig) -> Any:
    """The `StepCache` named by ``cache`` with ``cache_params`` (one-line `InputError` on bad parameters)."""
    from pusa_fw.api import get_cache

    try:
        return get_cache(config.cache, **config.cache_params)
    except ValidationError as error:
        raise InputError(f"--cache-params for cache {config.cache!r}: {one_line_validation_error(error)}") from error


def validate_config(values: dict[str, Any], where: str) -> GenerateConfig:
    """Validate `values` into a `GenerateConfig`, turning pydantic errors into one `InputError` line.

    Args:
        values: field values (strings are converted by pydantic).
        where: ``"option"`` to name fields as ``--flags``, or a file name for run-file keys.
    """
    try:
        return GenerateConfig.model_validate(values)
    except ValidationError as error:
        as_options = where == "option"
        text = one_line_validation_error(error, as_options=as_options).replace("Value error, ", "")
        prefix = "" if as_options else f"{where}: "
        raise InputError(f"{prefix}{text}") from error


def load_run_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], Path]:
    """Read a TOML run file into `GenerateConfig` field values (paths still relative).

    Returns:
        The values (with ``[task]`` split into ``task`` and ``task_params``) and the file's directory.

    Raises:
        InputError: the file is missing, is not valid TOML, or its ``[task]`` table has no ``name``.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError as error:
            raise InputError("--config needs Python 3.11+ (tomllib) or the tomli package") from error
    file = Path(path).expanduser()
    if not file.is_file():
        raise InputError(f"run file {str(file)!r} does not exist; check the --config path")
    try:
        values = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise InputError(f"cannot read run file {str(file)!r} as TOML: {error}") from error
    table = values.get("task")
    if isinstance(table, dict):
        params = dict(table)
        name = params.pop("name", None)
        if not isinstance(name, str):
            raise InputError(f"{str(file)!r}: the [task] table needs name = \"<task>\" (see `pusa-fw tasks`)")
        if "task_params" in values:
            raise InputError(f"{str(file)!r}: give task parameters in [task] or in task_params, not both")
        values["task"], values["task_params"] = name, params
    return rename_aliases(values, repr(str(file))), file.parent
