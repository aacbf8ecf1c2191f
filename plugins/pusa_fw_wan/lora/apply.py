"""LoRA for Wan models: load any known file format, apply at runtime with a per-LoRA strength, merge, unmerge.

Typical use::

    report = apply_loras(dit, [LoraSpec("pusa_v1.pt", strength=1.4), LoraSpec("lightx2v_4step.safetensors")])
    set_lora_strength(dit, "pusa_v1", 1.2)   # replaces the strength, never stacks
    merge_loras(dit); unmerge_loras(dit)     # fold into the weights for speed, and back
    remove_loras(dit)                        # the model is the plain model again

Each LoRA changes a weight by `strength * scale * B @ A`, with `scale = alpha / rank` when the file
gives an alpha and 1 otherwise (see `lora_formats` for which format gives what). `strength` is the user
multiplier (Pusa's command-line "lora_alpha 1.4" is `strength=1.4`: Pusa trained with alpha = rank, so
its files carry scale 1); `alpha` keeps peft's meaning. `diff` / `diff_b` entries add
`strength * diff` to a weight / bias.

Runtime LoRA adds `scaling * B(A x)` in each wrapped layer (peft) and keeps the base weights untouched;
merging writes `W + scaling * B @ A` into the base weights (faster, and undone by `unmerge_loras` up to
float rounding). While a model carries a LoRA its wrapped layers are peft `lora.Linear` modules, so its
`state_dict` keys read `...q.base_layer.weight`; `remove_loras` restores the plain module tree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from pusa_fw.errors import CheckpointError, InputError

from pusa_fw_wan.lora.formats import LoraModuleWeights, LoraState, load_lora_state, parse_lora_state_dict
from pusa_fw_wan.lora.report import AppliedLora, LoraReport
from pusa_fw_wan.lora.runtime import (
    REGISTRY_ATTRIBUTE,
    AdapterRecord,
    activate_all,
    add_diffs,
    apply_strength,
    delete_adapter,
    get_registry,
    inject_pairs,
    merge_all,
    refresh_diffs,
    require_registry,
    unmerge_all,
)
from pusa_fw_wan.lora.targets import MatchedLora, match_lora

__all__ = [
    "AppliedLora",
    "LoraModuleWeights",
    "LoraReport",
    "LoraSpec",
    "LoraState",
    "apply_loras",
    "load_lora_state",
    "lora_strengths",
    "merge_loras",
    "parse_lora_state_dict",
    "remove_loras",
    "set_lora_strength",
    "unmerge_loras",
]

_ADAPTER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_MAX_LISTED_KEYS = 40


def _check_strength(strength: float, what: str) -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
        raise InputError(f"LoRA strength for {what} is {strength!r}; it must be a finite number such as 1.0")
    return float(strength)


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA to apply.

    Attributes:
        path: the LoRA file (`.safetensors`, `.pt`, `.pth`, `.bin`).
        strength: multiplier on the file's `scale * B @ A` (and on its diffs); 1.0 is the file as trained.
        name: adapter name (letters, digits, `_`, `-`; no dots); defaults to the file stem with every
            other character replaced by `_`.
    """

    path: str | Path
    strength: float = 1.0
    name: str | None = None

    def __post_init__(self) -> None:
        _check_strength(self.strength, str(self.path))
        if self.name is not None and not _ADAPTER_NAME.fullmatch(self.name):
            raise InputError(
                f"LoRA name {self.name!r} is not usable as an adapter name; use letters, digits, '_' or '-' "
                "(no dots or spaces), starting with a letter or '_'"
            )

    @property
    def adapter_name(self) -> str:
        """The name the LoRA is registered under."""
        if self.name is not None:
            return self.name
        stem = re.sub(r"[^A-Za-z0-9_\-]", "_", Path(self.path).stem)
        return stem if stem and not stem[0].isdigit() and stem[0] != "-" else f"lora_{stem}"


def _foreign_key_error(source: Path, keys: Sequence[str], matched_any: bool) -> CheckpointError:
    listed = ", ".join(keys[:_MAX_LISTED_KEYS])
    more = f" ... and {len(keys) - _MAX_LISTED_KEYS} more" if len(keys) > _MAX_LISTED_KEYS else ""
    if not matched_any:
        return CheckpointError(
            f"LoRA file {str(source)!r} matches no module of the model; its keys: {listed}{more}. "
            "It is not a Wan DiT LoRA in a known format (or is for another architecture)"
        )
    return CheckpointError(
        f"LoRA file {str(source)!r} has {len(keys)} keys that match no module of the model: {listed}{more}. "
        "The LoRA may be for another model variant (e.g. I2V k_img/v_img on a T2V model); pass strict=False "
        "to apply the rest and get these keys in the report"
    )


def _load_and_match(model: nn.Module, spec: LoraSpec, strict: bool) -> tuple[LoraState, MatchedLora]:
    state = load_lora_state(spec.path)
    matched = match_lora(model, state)
    matched_any = bool(matched.pairs or matched.diffs)
    if not matched_any or (strict and matched.unmatched_keys):
        raise _foreign_key_error(state.source, matched.unmatched_keys or sorted(state.modules), matched_any)
    return state, matched


def read_and_match_loras(
    model: nn.Module, specs: Sequence[LoraSpec], strict: bool = True
) -> list[tuple[LoraSpec, LoraState, MatchedLora]]:
    """Read every LoRA file and match it against `model` (meta parameters suffice); the model is not changed.

    Raises:
        InputError: `specs` is not a list of `LoraSpec`, or adapter names clash.
        CheckpointError: a file that matches nothing, or (strict) keys that match no module.
    """
    if isinstance(specs, LoraSpec) or not all(isinstance(spec, LoraSpec) for spec in specs):
        raise InputError(
            f"apply_loras expects a list of LoraSpec, got {specs!r}; wrap each path in LoraSpec(path)"
        )
    registry = get_registry(model)
    taken = set(registry.adapters) if registry else set()
    taken |= set(getattr(model, "peft_config", {}) or {})
    names = [spec.adapter_name for spec in specs]
    clashes = sorted({name for name in names if name in taken or names.count(name) > 1})
    if clashes:
        raise InputError(
            f"LoRA names {clashes} are used twice or already applied; give each LoraSpec a distinct name="
        )
    return [(spec, *_load_and_match(model, spec, strict)) for spec in specs]


def applied_lora(spec: LoraSpec, state: LoraState, matched: MatchedLora) -> AppliedLora:
    """The report entry of one LoRA file applied with `spec`."""
    return AppliedLora(
        name=spec.adapter_name,
        source=state.source,
        naming=state.naming,
        strength=float(spec.strength),
        modules=tuple(sorted(matched.pairs)),
        diff_parameters=tuple(sorted(matched.diffs)),
        ranks=tuple(sorted({entry.rank for entry in matched.pairs.values()})),
        scales=tuple(sorted({entry.scale for entry in matched.pairs.values()})),
        unmatched_keys=tuple(matched.unmatched_keys),
    )


def apply_loras(
    model: nn.Module, specs: Sequence[LoraSpec], merge: bool = False, strict: bool = True
) -> LoraReport:
    """Apply one or several LoRA files to a model, each with its own strength.

    All files are read and checked against the model before the model is changed, so a bad file leaves
    the model untouched. If the model's LoRAs are merged, they are unmerged for the change and merged
    again afterwards.

    Args:
        model: the model (e.g. `WanDiT`), named like the original Wan checkpoints.
        specs: the LoRAs; their adapter names must be unique and not yet applied.
        merge: fold all LoRAs into the base weights afterwards (see `merge_loras`).
        strict: raise `CheckpointError` listing the keys that match no module (default); with False,
            apply the rest and list them in the report.

    Returns:
        A `LoraReport`.
    """
    loaded = read_and_match_loras(model, specs, strict)
    registry = get_registry(model, create=True)
    assert registry is not None
    was_merged = registry.merged
    unmerge_all(model, registry)
    applied = []
    for spec, state, matched in loaded:
        name = spec.adapter_name
        if matched.pairs:
            inject_pairs(model, name, matched.pairs)
        diffs = add_diffs(registry, matched.diffs)
        registry.adapters[name] = AdapterRecord(float(spec.strength), tuple(sorted(matched.pairs)), diffs)
        activate_all(model, registry)
        apply_strength(model, registry, name)
        applied.append(applied_lora(spec, state, matched))
    refresh_diffs(registry)
    if merge or was_merged:
        merge_all(model, registry)
    return LoraReport(loras=tuple(applied), merged=registry.merged)


def set_lora_strength(model: nn.Module, name: str, strength: float) -> None:
    """Replace the strength of an applied LoRA (works merged or unmerged; never stacks).

    Args:
        model: a model with LoRAs applied.
        name: the adapter name (`LoraSpec.adapter_name`).
        strength: the new multiplier.
    """
    registry = require_registry(model)
    if name not in registry.adapters:
        raise InputError(f"no LoRA named {name!r} on the model; applied: {sorted(registry.adapters)}")
    strength = _check_strength(strength, name)
    was_merged = registry.merged
    unmerge_all(model, registry)
    registry.adapters[name].strength = strength
    apply_strength(model, registry, name)
    refresh_diffs(registry)
    if was_merged:
        merge_all(model, registry)


def lora_strengths(model: nn.Module) -> dict[str, float]:
    """Adapter name -> current strength ({} when the model has no LoRA)."""
    registry = get_registry(model)
    return {} if registry is None else {name: record.strength for name, record in registry.adapters.items()}


def merge_loras(model: nn.Module) -> None:
    """Fold every applied LoRA into the base weights: `W += strength * scale * B @ A` (peft `merge`)."""
    merge_all(model, require_registry(model))


def unmerge_loras(model: nn.Module) -> None:
    """Undo `merge_loras`: subtract the merged deltas again, back to runtime LoRA."""
    unmerge_all(model, require_registry(model))


def remove_loras(model: nn.Module, names: Iterable[str] | None = None) -> None:
    """Remove LoRAs (all of them by default); the last removal restores the plain module tree.

    Args:
        model: a model with LoRAs applied.
        names: adapter names to remove, or None for all.
    """
    registry = require_registry(model)
    targets = list(registry.adapters) if names is None else list(names)
    unknown = sorted(set(targets) - set(registry.adapters))
    if unknown:
        raise InputError(f"no LoRA named {unknown} on the model; applied: {sorted(registry.adapters)}")
    was_merged = registry.merged
    unmerge_all(model, registry)
    for name in targets:
        delete_adapter(model, registry, name)
    if registry.adapters:
        if was_merged:
            merge_all(model, registry)
    else:
        del model.__dict__[REGISTRY_ATTRIBUTE]
