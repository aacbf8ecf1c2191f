"""Read a LoRA file of any known Wan format into one normalised form.

Formats (`wan_reference.md` §2.3, `pusa_reference.md` §4.4) and the scale each one implies. The rule is
the same for all of them: **scale = alpha / rank when the file gives an alpha, else 1**, and the weight
delta is `strength * scale * B @ A`.

- PEFT / DiffSynth / Pusa V1: `blocks.0.self_attn.q.lora_A.default.weight` (or without `.default`).
  No alpha: scale 1 (Pusa and DiffSynth train with alpha = rank).
- pusa-fw training checkpoints (`adapter.safetensors`): PEFT names without `.default`; alpha from the
  safetensors metadata (`format = "pusa-fw-lora"`, `alpha`).
- diffusers: `transformer.blocks.0.attn1.to_q.lora_A.weight`, optional `...lora_B.bias`. Alpha from the
  safetensors metadata `lora_adapter_metadata` (`lora_alpha`, `alpha_pattern`), else scale 1. diffusers'
  `save_lora_weights` prefixes those keys with the component (`transformer.lora_alpha`); when any key is
  prefixed `transformer.`, those are the ones read, else the unprefixed ones (older pusa-fw exports).
- ComfyUI / lightx2v / CausVid: `diffusion_model.blocks.0.self_attn.q.lora_down.weight` (or
  `lora_A`), `.alpha`, `.diff`, `.diff_b`, `.diff_m`. Alpha from the `.alpha` key, else scale 1.
  LightX2V's Wan2.1 step-distill LoRAs (its `lora_extractor`: SVD pairs for large weights, no alpha) hold
  every other parameter as a full delta: `.diff` for small weights and norms (`head.head`,
  `patch_embedding`, `norm_q`), `.diff_b` for biases and `.diff_m` for a block's or the head's
  `modulation` (`blocks.0.diff_m` is the delta of the parameter `blocks.0.modulation`). The Wan2.2-Lightning
  LoRAs Pusa merges into Wan2.1 use the same names with `lora_down` / `lora_up` and an `.alpha` per pair.
- kohya / musubi-tuner: `lora_unet_blocks_0_self_attn_q.lora_down.weight`, `.alpha`. Alpha from the
  `.alpha` key, else scale 1.

`diff` is a full weight delta, `diff_b` a full bias delta and `diff_m` a full `modulation` delta; all are
added as `strength * diff`.
Keys that fit no format, or name no Wan module, are kept in `LoraState.foreign_keys`; they are never
dropped without a trace.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pusa_fw.errors import CheckpointError

from pusa_fw_wan.weights.files import read_tensor_file
from pusa_fw_wan.lora.names import diffusers_to_original, is_diffusers_name, kohya_to_dotted, strip_prefix

_PAIR_KEY = re.compile(
    r"(?P<module>.+?)\.(?P<kind>lora_A|lora_B|lora_down|lora_up)(?:\.default)?\.(?P<param>weight|bias)"
)
_SINGLE_KEY = re.compile(r"(?P<module>.+)\.(?P<kind>alpha|diff|diff_b|diff_m)")
_MODULATION = "modulation"  # `X.diff_m` is the full delta of the parameter `X.modulation` (LightX2V)
_METADATA_KEY = "lora_adapter_metadata"
_COMPONENT = "transformer."


@dataclass
class LoraModuleWeights:
    """The LoRA tensors of one target (a module, or a bare parameter for `diff`).

    Attributes:
        down: A, `[r, in]` for a Linear (`[r, in, *kernel]` for a conv), or None.
        up: B, `[out, r]` (`[out, r, 1, 1, 1]` for a Conv3d), or None.
        up_bias: `[out]` bias of B (diffusers `lora_B.bias`), or None.
        alpha: the file's alpha for this module (PEFT meaning: scale = alpha / rank), or None.
        diff: full weight delta, shape of the target weight (or of the bare parameter), or None.
        diff_b: full bias delta `[out]`, or None.
        keys: the file keys these tensors came from, for error messages.
    """

    down: torch.Tensor | None = None
    up: torch.Tensor | None = None
    up_bias: torch.Tensor | None = None
    alpha: float | None = None
    diff: torch.Tensor | None = None
    diff_b: torch.Tensor | None = None
    keys: list[str] = field(default_factory=list)

    @property
    def has_pair(self) -> bool:
        """Whether this target carries a low-rank pair (A and B)."""
        return self.down is not None and self.up is not None

    @property
    def rank(self) -> int:
        """Rank r of the pair (rows of A)."""
        if self.down is None:
            raise CheckpointError(f"LoRA keys {self.keys} have no lora_A / lora_down weight, so no rank")
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        """`alpha / rank` when the file gave an alpha, else 1 (multiplies B @ A before the strength)."""
        return 1.0 if self.alpha is None else self.alpha / self.rank


@dataclass
class LoraState:
    """A LoRA file in normalised form.

    Attributes:
        source: the file it was read from.
        naming: "original" or "diffusers", the module naming the file used.
        modules: original Wan module path (`blocks.0.self_attn.q`, or a parameter path such as
            `blocks.0.modulation` for a bare `diff`) -> its tensors.
        foreign_keys: keys that fit no LoRA key format or name no Wan module.
    """

    source: Path
    naming: str
    modules: dict[str, LoraModuleWeights]
    foreign_keys: list[str]


def _metadata_alphas(metadata: dict[str, str], path: Path) -> tuple[float | None, dict[str, float]]:
    """Global `lora_alpha` and `alpha_pattern` from diffusers' `lora_adapter_metadata`, if present, or the
    ``alpha`` of a pusa-fw training checkpoint's adapter (metadata ``format = "pusa-fw-lora"``)."""
    raw = metadata.get(_METADATA_KEY)
    if raw is None and metadata.get("format") == "pusa-fw-lora" and "alpha" in metadata:
        try:
            return float(metadata["alpha"]), {}
        except ValueError as error:
            raise CheckpointError(
                f"LoRA file {str(path)!r}: metadata alpha {metadata['alpha']!r} is not a number"
            ) from error
    if raw is None:
        return None, {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise CheckpointError(
            f"LoRA file {str(path)!r}: metadata {_METADATA_KEY!r} is not JSON: {error}"
        ) from error
    if not isinstance(config, dict):
        raise CheckpointError(
            f"LoRA file {str(path)!r}: metadata {_METADATA_KEY!r} is a JSON {type(config).__name__}, "
            "not an object; the file is damaged"
        )
    config = _component_config(config)
    for flag in ("use_dora", "use_rslora"):
        if config.get(flag):
            raise CheckpointError(
                f"LoRA file {str(path)!r} was saved with {flag}=True, which is not supported"
            )
    alpha = config.get("lora_alpha")
    pattern = {str(key): float(value) for key, value in (config.get("alpha_pattern") or {}).items()}
    return (None if alpha is None else float(alpha)), pattern


def _component_config(config: dict[str, object]) -> dict[str, object]:
    """The transformer's LoRA config out of a `lora_adapter_metadata` object: the keys under the
    `transformer.` prefix (diffusers' layout, one entry per pipeline component) when there are any, else
    the unprefixed keys."""
    prefixed = {key[len(_COMPONENT) :]: value for key, value in config.items() if key.startswith(_COMPONENT)}
    return prefixed or config


def _scalar(tensor: torch.Tensor, key: str) -> float:
    if tensor.numel() != 1:
        raise CheckpointError(f"LoRA key {key!r} should be a scalar alpha, got shape {list(tensor.shape)}")
    value = float(tensor.reshape(()).item())
    if not math.isfinite(value):
        raise CheckpointError(f"LoRA key {key!r} has a non-finite alpha {value}")
    return value


def _store(entry: LoraModuleWeights, slot: str, value: torch.Tensor, key: str) -> None:
    if getattr(entry, slot) is not None:
        raise CheckpointError(
            f"LoRA key {key!r} duplicates an earlier key for the same module ({entry.keys}); "
            "the file mixes two names for one tensor (e.g. lora_A and lora_down)"
        )
    setattr(entry, slot, value)
    entry.keys.append(key)


_SLOTS = {"lora_A": "down", "lora_down": "down", "lora_B": "up", "lora_up": "up"}


def _parse_key(key: str) -> tuple[str, str, str] | None:
    """Split one key into (raw dotted module name, slot, prefix); None when it fits no format."""
    prefix, rest = strip_prefix(key)
    pair = _PAIR_KEY.fullmatch(rest)
    if pair:
        slot = _SLOTS[pair["kind"]]
        if pair["param"] == "bias":
            if slot != "up":
                return None
            slot = "up_bias"
        module = pair["module"]
    else:
        single = _SINGLE_KEY.fullmatch(rest)
        if single is None:
            return None
        slot, module = single["kind"], single["module"]
        if slot == "diff_m":
            slot, module = "diff", f"{module}.{_MODULATION}"
    if prefix == "lora_unet_":
        dotted = kohya_to_dotted(module)
        if dotted is None:
            return None
        module = dotted
    return module, slot, prefix


def _validate(entry: LoraModuleWeights, name: str, path: Path) -> None:
    if (entry.down is None) != (entry.up is None):
        raise CheckpointError(
            f"LoRA file {str(path)!r}: module {name!r} has only one half of its low-rank pair "
            f"(keys {entry.keys}); "
            "both A (lora_A / lora_down) and B (lora_B / lora_up) are needed"
        )
    if not entry.has_pair and (entry.alpha is not None or entry.up_bias is not None):
        raise CheckpointError(
            f"LoRA file {str(path)!r}: keys {entry.keys} give an alpha or bias but no A/B pair"
        )
    if entry.has_pair:
        assert entry.down is not None and entry.up is not None
        if entry.down.dim() < 2 or entry.up.dim() < 2 or entry.up.shape[1] != entry.down.shape[0]:
            raise CheckpointError(
                f"LoRA file {str(path)!r}: module {name!r} has A {list(entry.down.shape)} and B "
                f"{list(entry.up.shape)}, whose ranks (A rows, B columns) differ"
            )


def parse_lora_state_dict(
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
    source: str | Path = "<memory>",
) -> LoraState:
    """Normalise a LoRA state dict of any known format.

    Args:
        tensors: the file's `{key: tensor}`.
        metadata: safetensors metadata (`lora_adapter_metadata` gives diffusers' lora_alpha), or None.
        source: where the dict came from, for messages.

    Returns:
        A `LoraState` in original Wan module naming, with the keys that fit nothing in `foreign_keys`.
    """
    path = Path(source)
    global_alpha, alpha_pattern = _metadata_alphas(dict(metadata or {}), path)
    raw: dict[str, LoraModuleWeights] = {}
    foreign: list[str] = []
    diffusers_named = False
    for key, tensor in tensors.items():
        parsed = _parse_key(key)
        if parsed is None:
            foreign.append(key)
            continue
        module, slot, prefix = parsed
        diffusers_named |= prefix == "transformer." or is_diffusers_name(module)
        entry = raw.setdefault(module, LoraModuleWeights())
        if slot == "alpha":
            if entry.alpha is not None:
                raise CheckpointError(
                    f"LoRA file {str(path)!r}: second alpha for module {module!r} in key {key!r}"
                )
            entry.alpha = _scalar(tensor, key)
            entry.keys.append(key)
        else:
            _store(entry, slot, tensor, key)
    modules: dict[str, LoraModuleWeights] = {}
    for module, entry in raw.items():
        name = diffusers_to_original(module) if diffusers_named else module
        if name is None:
            foreign.extend(entry.keys)
            continue
        if name in modules:
            raise CheckpointError(
                f"LoRA file {str(path)!r}: keys {modules[name].keys} and {entry.keys} "
                f"both target module {name!r}"
            )
        if entry.alpha is None and entry.has_pair:
            entry.alpha = _pattern_alpha(module, alpha_pattern, global_alpha)
        _validate(entry, name, path)
        modules[name] = entry
    return LoraState(
        source=path,
        naming="diffusers" if diffusers_named else "original",
        modules=modules,
        foreign_keys=sorted(foreign),
    )


def _pattern_alpha(module: str, alpha_pattern: dict[str, float], global_alpha: float | None) -> float | None:
    """PEFT's rule: the first `alpha_pattern` key matching the end of the module path, else lora_alpha."""
    for pattern, alpha in alpha_pattern.items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return alpha
    return global_alpha


def load_lora_state(path: str | Path) -> LoraState:
    """Read and normalise a LoRA file (`.safetensors`, or `.pt`/`.pth`/`.bin` with `weights_only=True`).

    Args:
        path: the LoRA file.

    Returns:
        The normalised `LoraState`; see the module docstring for the formats and their alpha rules.
    """
    tensors, metadata = read_tensor_file(path, what="LoRA file")
    if not tensors:
        raise CheckpointError(f"LoRA file {str(path)!r} holds no tensors")
    return parse_lora_state_dict(tensors, metadata, path)
