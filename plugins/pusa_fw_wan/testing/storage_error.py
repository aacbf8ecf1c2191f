"""The error of a low-precision weight storage against float32, per large linear and end to end.

Used by the tests (which bound it) and by ``benchmarks/bench_weights_dtype.py`` (which prints it). Errors
are max-abs and relative L2 (``||a - b|| / ||b||``) of the outputs, float32 model as the reference.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from pusa_fw_wan.dit.storage import large_linear_names, storage_bytes

__all__ = [
    "LoraOnLowPrecision",
    "StorageError",
    "compare_lora_on_low_precision",
    "measure_storage_error",
    "write_random_lora",
]


@dataclass(frozen=True)
class StorageError:
    """Errors of one storage dtype against float32.

    Attributes:
        weights_dtype: the storage dtype's name.
        velocity_max_abs / velocity_relative: end-to-end velocity error.
        layer_max_abs / layer_relative: worst over the large linears of the per-layer output error, each
            layer fed the float32 model's own input to it.
        worst_layer: the module path with the largest relative error.
        stored_bytes: bytes of all parameters and buffers of the stored model.
    """

    weights_dtype: str
    velocity_max_abs: float
    velocity_relative: float
    layer_max_abs: float
    layer_relative: float
    worst_layer: str
    stored_bytes: int


def write_random_lora(path: str, model: nn.Module, rank: int = 4, seed: int = 0, size: float = 0.5) -> str:
    """Write a random LoRA (plain ``lora_A``/``lora_B`` keys) on every large linear of `model`.

    ``B @ A`` has about `size` times the spectral scale of a weight (1/sqrt(fan_in)), so the LoRA changes the
    velocity clearly. Returns `path`.
    """
    from pusa_fw_wan.weights import write_tensor_file

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name in large_linear_names(model):
        layer = model.get_submodule(name)
        tensors[f"{name}.lora_A.weight"] = torch.randn(rank, layer.in_features, generator=generator) * (
            layer.in_features**-0.5
        )
        tensors[f"{name}.lora_B.weight"] = torch.randn(layer.out_features, rank, generator=generator) * (
            size * rank**-0.5
        )
    write_tensor_file(path, tensors)
    return str(path)


def _relative(found: torch.Tensor, reference: torch.Tensor) -> float:
    reference = reference.double()
    return float((found.double() - reference).norm() / reference.norm().clamp_min(1e-30))


def measure_storage_error(
    reference: nn.Module,
    weights_dtype: str,
    latents: torch.Tensor,
    sigmas: torch.Tensor,
    context: torch.Tensor,
) -> StorageError:
    """Store a copy of a float32 `WanDiT` in `weights_dtype` and compare it with the original.

    Args:
        reference: a float32 `WanDiT` (not changed).
        weights_dtype: a name of `pusa_fw_wan.dit.storage.WEIGHTS_DTYPES` other than auto.
        latents: `[B, C, F, H, W]`.
        sigmas: `[B, F]` or `[B]`.
        context: `[B, L, text_dim]`.
    """
    stored = copy.deepcopy(reference).set_weights_dtype(weights_dtype)
    names = large_linear_names(reference)
    inputs: dict[str, torch.Tensor] = {}
    handles = [
        reference.get_submodule(name).register_forward_hook(
            lambda _module, args, _out, name=name: inputs.__setitem__(name, args[0].detach())
        )
        for name in names
    ]
    with torch.no_grad():
        try:
            expected = reference.velocity(latents, sigmas, context)
        finally:
            for handle in handles:
                handle.remove()
        found = stored.velocity(latents, sigmas, context)
        layer_max_abs, layer_relative, worst = 0.0, 0.0, names[0]
        for name in names:
            want = reference.get_submodule(name)(inputs[name]).float()
            got = stored.get_submodule(name)(inputs[name]).float()
            relative = _relative(got, want)
            layer_max_abs = max(layer_max_abs, float((got - want).abs().max()))
            if relative > layer_relative:
                layer_relative, worst = relative, name
    return StorageError(
        weights_dtype=weights_dtype,
        velocity_max_abs=float((found - expected).abs().max()),
        velocity_relative=_relative(found, expected),
        layer_max_abs=layer_max_abs,
        layer_relative=layer_relative,
        worst_layer=worst,
        stored_bytes=storage_bytes(stored),
    )


@dataclass(frozen=True)
class LoraOnLowPrecision:
    """A LoRA on a low-precision base, three ways, against the LoRA merged into the float32 model.

    Attributes:
        weights_dtype: the base's storage dtype.
        unmerged_relative: peft's runtime branch on the stored base.
        merged_per_layer_relative: merged per layer into the dequantised weight at compute time.
        requantized_relative: merged in float32 and the sum stored again (what merging into the stored
            weights amounts to).
        merged_vs_unmerged_max_abs: how far the two exact ways are apart (float rounding only).
        lora_effect_relative: size of the LoRA's own change of the velocity, for scale.
    """

    weights_dtype: str
    unmerged_relative: float
    merged_per_layer_relative: float
    requantized_relative: float
    merged_vs_unmerged_max_abs: float
    lora_effect_relative: float


def compare_lora_on_low_precision(
    reference: nn.Module,
    lora_path: str,
    strength: float,
    weights_dtype: str,
    latents: torch.Tensor,
    sigmas: torch.Tensor,
    context: torch.Tensor,
) -> LoraOnLowPrecision:
    """Apply a LoRA file at `strength` to a float32 `WanDiT` and to copies stored in `weights_dtype`.

    Args:
        reference: a float32 `WanDiT` without LoRA (not changed).
        lora_path: the LoRA file.
        strength: its strength (Pusa V1: 1.4).
        weights_dtype: storage of the base, e.g. ``"float8_e4m3fn"``.
        latents, sigmas, context: the inputs of `WanDiT.velocity`.
    """
    from pusa_fw_wan.lora.apply import LoraSpec, apply_loras, remove_loras, unmerge_loras
    from pusa_fw_wan.lora.runtime import lora_layers

    spec = [LoraSpec(lora_path, strength=strength)]
    with torch.no_grad():
        base = reference.velocity(latents, sigmas, context)
        full = copy.deepcopy(reference)
        apply_loras(full, spec, merge=True)
        expected = full.velocity(latents, sigmas, context)
        stored = copy.deepcopy(reference).set_weights_dtype(weights_dtype)
        apply_loras(stored, spec, merge=True)
        merged = stored.velocity(latents, sigmas, context)
        unmerge_loras(stored)
        unmerged = stored.velocity(latents, sigmas, context)
        requantized = copy.deepcopy(reference)
        apply_loras(requantized, spec, merge=True)
        merged_weights = {
            path: layer.get_base_layer().weight.detach().clone() for path, layer in lora_layers(requantized)
        }
        remove_loras(requantized)
        for path, weight in merged_weights.items():
            requantized.get_submodule(path).weight.copy_(weight)
        requantized.set_weights_dtype(weights_dtype)
        requantized_out = requantized.velocity(latents, sigmas, context)
    return LoraOnLowPrecision(
        weights_dtype=weights_dtype,
        unmerged_relative=_relative(unmerged, expected),
        merged_per_layer_relative=_relative(merged, expected),
        requantized_relative=_relative(requantized_out, expected),
        merged_vs_unmerged_max_abs=float((merged - unmerged).abs().max()),
        lora_effect_relative=_relative(expected, base),
    )
