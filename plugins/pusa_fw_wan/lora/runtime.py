"""Runtime LoRA on a model through peft: inject, scale, merge, unmerge, remove.

Low-rank pairs become peft LoRA adapters (one adapter per LoRA file, named after it). peft's own
meaning of alpha is kept: each wrapped layer gets `r` = the file's rank and `lora_alpha` = the file's
alpha (or r when the file has none), so peft's base scaling `alpha / r` is the file's scale; the user's
`strength` is applied with peft's `set_scale`, giving `scaling = strength * alpha / r`. Changing the
strength sets the scaling again, it never multiplies the old one, so changes do not stack.

`diff` / `diff_b` entries are full deltas, which peft cannot hold; they are added to the parameters in
place, `W = W_original + sum(strength_i * diff_i)`, recomputed from a stored copy of `W_original` on every
change, so removing a LoRA restores the parameter bit for bit.

The bookkeeping lives in a `LoraRegistry` stored on the model (attribute `REGISTRY_ATTRIBUTE`).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pusa_fw.errors import InputError

from pusa_fw_wan.dit.storage import LowPrecisionLinear, compute_dtype_of
from pusa_fw_wan.lora.formats import LoraModuleWeights

REGISTRY_ATTRIBUTE = "_pusa_fw_loras"


@dataclass
class AdapterRecord:
    """One applied LoRA file.

    Attributes:
        strength: the user multiplier on `scale * B @ A` and on the diffs.
        modules: module paths that carry this adapter's low-rank pair.
        diffs: parameter path -> full delta (same shape, dtype and device as the parameter).
    """

    strength: float
    modules: tuple[str, ...]
    diffs: dict[str, torch.Tensor]


@dataclass
class LoraRegistry:
    """All LoRAs applied to one model, and the state needed to undo them."""

    adapters: dict[str, AdapterRecord] = field(default_factory=dict)
    parameters: dict[str, nn.Parameter] = field(default_factory=dict)
    originals: dict[str, torch.Tensor] = field(default_factory=dict)
    merged: bool = False


def get_registry(model: nn.Module, create: bool = False) -> LoraRegistry | None:
    """The model's LoRA registry; a new empty one is attached when `create` is set."""
    registry = model.__dict__.get(REGISTRY_ATTRIBUTE)
    if registry is None and create:
        registry = LoraRegistry()
        model.__dict__[REGISTRY_ATTRIBUTE] = registry
    return registry


def require_registry(model: nn.Module) -> LoraRegistry:
    """The model's LoRA registry, or an `InputError` when no LoRA was applied to it."""
    registry = get_registry(model)
    if registry is None or not registry.adapters:
        raise InputError(
            f"{type(model).__name__} has no LoRA applied; call apply_loras(model, [LoraSpec(...)]) first"
        )
    return registry


def lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every peft LoRA layer in the model, as (module path, layer)."""
    from peft.tuners.lora import LoraLayer

    return [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]


def _exact_patterns(values: dict[str, int] | dict[str, float]) -> dict[str, int | float]:
    """peft `rank_pattern` / `alpha_pattern` keys are regexes: escape the paths so each matches one module."""
    return {re.escape(name): value for name, value in values.items()}


def inject_pairs(model: nn.Module, adapter: str, pairs: dict[str, LoraModuleWeights]) -> None:
    """Wrap the target modules with a peft adapter and load the file's A/B weights into it.

    Args:
        model: the model; targets are its module paths.
        adapter: the peft adapter name (no dots).
        pairs: module path -> tensors with A `[r, in]` and B `[out, r]` already shape-checked.
    """
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    names = sorted(pairs)
    ranks = {name: pairs[name].rank for name in names}
    alphas = {
        name: float(pairs[name].alpha if pairs[name].alpha is not None else ranks[name]) for name in names
    }
    with_bias = any(pairs[name].up_bias is not None for name in names)
    config = LoraConfig(
        r=ranks[names[0]],
        lora_alpha=alphas[names[0]],
        target_modules=names,
        rank_pattern=_exact_patterns(ranks),
        alpha_pattern=_exact_patterns(alphas),
        lora_bias=with_bias,
        lora_dropout=0.0,
    )
    with warnings.catch_warnings():
        # peft warns when a model already carries a peft_config: several adapters is what we want.
        warnings.filterwarnings("ignore", message=".*Already found a `peft_config` attribute.*")
        inject_adapter_in_model(config, model, adapter_name=adapter, low_cpu_mem_usage=True)
    modules = dict(model.named_modules())
    weights: dict[str, torch.Tensor] = {}
    for name in names:
        layer = modules[name]
        base_weight = layer.get_base_layer().weight
        entry = pairs[name]
        assert entry.down is not None and entry.up is not None
        # On a low-precision base (fp8 storage) the adapter lives in the layer's compute dtype.
        cast = {"dtype": compute_dtype_of(layer), "device": base_weight.device}
        weights[f"{name}.lora_A.weight"] = entry.down.to(**cast).contiguous()
        weights[f"{name}.lora_B.weight"] = entry.up.to(**cast).contiguous()
        if with_bias:
            bias = entry.up_bias if entry.up_bias is not None else torch.zeros(entry.up.shape[0])
            weights[f"{name}.lora_B.bias"] = bias.to(**cast).contiguous()
    result = set_peft_model_state_dict(model, weights, adapter_name=adapter, low_cpu_mem_usage=True)
    left = [key for key in result.missing_keys if f".{adapter}." in key] + list(result.unexpected_keys)
    if left:
        raise RuntimeError(f"peft did not take the LoRA weights {left[:10]} of adapter {adapter!r}")
    for name in names:
        layer = modules[name]
        if isinstance(layer.get_base_layer(), LowPrecisionLinear):
            dtype = compute_dtype_of(layer)
            for part in (layer.lora_A[adapter], layer.lora_B[adapter]):
                if part.weight.dtype != dtype:
                    part.to(dtype=dtype)


def activate_all(model: nn.Module, registry: LoraRegistry) -> None:
    """Make every registered adapter active (and frozen) in every layer that carries it."""
    for _, layer in lora_layers(model):
        present = [
            name for name in layer.lora_A if name in registry.adapters or name in layer.active_adapters
        ]
        layer.set_adapter(present, inference_mode=True)


def apply_strength(model: nn.Module, registry: LoraRegistry, adapter: str) -> None:
    """Set peft's scaling of `adapter` to `strength * alpha / r` in every layer (no stacking)."""
    strength = registry.adapters[adapter].strength
    for _, layer in lora_layers(model):
        if adapter in layer.lora_A:
            layer.set_scale(adapter, strength)


def refresh_diffs(registry: LoraRegistry) -> None:
    """Recompute every diff-patched parameter as `original + sum(strength * diff)` over the adapters."""
    for path, parameter in registry.parameters.items():
        value = registry.originals[path].clone()
        for record in registry.adapters.values():
            delta = record.diffs.get(path)
            if delta is not None:
                value.add_(delta, alpha=record.strength)
        with torch.no_grad():
            parameter.copy_(value)


def add_diffs(
    registry: LoraRegistry, diffs: dict[str, tuple[nn.Parameter, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Record the originals of newly patched parameters; return the deltas cast to each parameter."""
    cast: dict[str, torch.Tensor] = {}
    for path, (parameter, delta) in diffs.items():
        if parameter.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            raise InputError(
                f"the LoRA has a full-weight diff for {path}, which is stored in {parameter.dtype}; "
                "load the model with weights_dtype bfloat16 (--weights-dtype bfloat16) to apply it"
            )
        if path not in registry.parameters:
            registry.parameters[path] = parameter
            registry.originals[path] = parameter.detach().clone()
        cast[path] = delta.to(dtype=parameter.dtype, device=parameter.device)
    return cast


def _merge_low_precision(layer: Any, names: list[str]) -> None:
    """Merge into a low-precision base per layer: the base adds `scaling * B @ A` to its dequantised
    weight in every forward (`LowPrecisionLinear.merged_deltas`); the stored weight is not touched."""
    base = layer.get_base_layer()
    for name in names:
        up = layer.lora_B[name]
        base.merged_deltas.append(
            (layer.lora_A[name].weight, up.weight, getattr(up, "bias", None), float(layer.scaling[name]))
        )
        layer.merged_adapters.append(name)


def merge_all(model: nn.Module, registry: LoraRegistry) -> None:
    """Fold every active adapter's `scaling * B @ A` into its base weight (peft `merge`).

    A base stored in another dtype than it computes in (`LowPrecisionLinear`, e.g. fp8) is merged per
    layer at compute time instead, into a dequantised copy that exists only while the layer runs.
    """
    if registry.merged:
        return
    for _, layer in lora_layers(model):
        names = [name for name in layer.active_adapters if name in layer.lora_A]
        if not names:
            continue
        if isinstance(layer.get_base_layer(), LowPrecisionLinear):
            _merge_low_precision(layer, names)
        else:
            layer.merge(adapter_names=names)
    registry.merged = True


def unmerge_all(model: nn.Module, registry: LoraRegistry) -> None:
    """Subtract the merged deltas again (peft `unmerge`), back to runtime LoRA."""
    if not registry.merged:
        return
    for _, layer in lora_layers(model):
        if not layer.merged:
            continue
        base = layer.get_base_layer()
        if isinstance(base, LowPrecisionLinear):
            base.merged_deltas.clear()
            layer.merged_adapters.clear()
        else:
            layer.unmerge()
    registry.merged = False


def delete_adapter(model: nn.Module, registry: LoraRegistry, adapter: str) -> None:
    """Remove one adapter (model must be unmerged); unwrap layers left without adapters."""
    record = registry.adapters.pop(adapter)
    for path, layer in lora_layers(model):
        if adapter not in layer.lora_A:
            continue
        layer.delete_adapter(adapter)
        if not layer.lora_A:
            parent_path, _, child = path.rpartition(".")
            setattr(model.get_submodule(parent_path), child, layer.get_base_layer())
    configs = model.__dict__.get("peft_config")
    if isinstance(configs, dict):
        configs.pop(adapter, None)
        if not configs:
            del model.peft_config
    for path in record.diffs:
        if not any(path in other.diffs for other in registry.adapters.values()):
            parameter = registry.parameters.pop(path)
            with torch.no_grad():
                parameter.copy_(registry.originals.pop(path))
    refresh_diffs(registry)
    activate_all(model, registry)
