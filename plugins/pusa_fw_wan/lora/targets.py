"""Match a normalised LoRA state against a model: which module or parameter each entry patches.

Everything is checked before the model is touched, so a LoRA that does not fit leaves the model as it
was. Entries that name nothing in the model are returned as unmatched keys (the caller decides whether
that is an error); entries that name a module but do not fit its shape raise `CheckpointError` at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from pusa_fw.errors import CheckpointError

from pusa_fw_wan.lora.formats import LoraModuleWeights, LoraState

# Layer types peft's LoRA can wrap, with the A/B shapes we check against.
_LINEAR_TYPES = (nn.Linear,)
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class MatchedLora:
    """A LoRA state resolved against one model.

    Attributes:
        pairs: module path -> tensors, for entries with an A/B pair (the module is nn.Linear or a conv,
            possibly already wrapped by peft).
        diffs: parameter path (`blocks.0.norm3.weight`) -> (the parameter, its full delta), from `diff` and
            `diff_b` entries.
        unmatched_keys: file keys whose target does not exist in the model, plus the file's foreign keys.
    """

    pairs: dict[str, LoraModuleWeights] = field(default_factory=dict)
    diffs: dict[str, tuple[nn.Parameter, torch.Tensor]] = field(default_factory=dict)
    unmatched_keys: list[str] = field(default_factory=list)


def base_layer(module: nn.Module) -> nn.Module:
    """The layer under any peft wrappers (the module itself when it is not wrapped)."""
    while hasattr(module, "base_layer"):
        module = module.base_layer  # type: ignore[assignment]
    return module


def _expected_pair_shapes(layer: nn.Module, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    if isinstance(layer, _LINEAR_TYPES):
        return (rank, layer.in_features), (layer.out_features, rank)
    if isinstance(layer, _CONV_TYPES):
        kernel = tuple(layer.kernel_size)
        return (rank, layer.in_channels // layer.groups, *kernel), (
            layer.out_channels,
            rank,
            *(1,) * len(kernel),
        )
    return None


def _resolve_parameter(
    modules: dict[str, nn.Module], path: str, bias: bool
) -> tuple[str, nn.Parameter] | None:
    """The parameter a `diff` (weight or bare parameter) or `diff_b` (bias) of `path` adds to."""
    module = modules.get(path)
    if module is not None:
        attribute = "bias" if bias else "weight"
        parameter = getattr(base_layer(module), attribute, None)
        return (f"{path}.{attribute}", parameter) if isinstance(parameter, nn.Parameter) else None
    if bias:
        return None
    parent_path, _, attribute = path.rpartition(".")
    parent = modules.get(parent_path)  # "" is the model itself in named_modules()
    if parent is None:
        return None
    parameter = getattr(base_layer(parent), attribute, None)
    return (path, parameter) if isinstance(parameter, nn.Parameter) else None


def _shape_error(
    state: LoraState, keys: list[str], what: str, expected: object, got: object
) -> CheckpointError:
    return CheckpointError(
        f"LoRA file {str(state.source)!r}: keys {keys} do not fit the model: {what} should be {expected}, "
        f"the file has {got}; the LoRA was made for a model of a different size or type"
    )


def match_lora(model: nn.Module, state: LoraState) -> MatchedLora:
    """Resolve every entry of a LoRA state against the model's modules and parameters.

    Args:
        model: the model (e.g. `WanDiT`), with original Wan module names.
        state: the normalised LoRA file.

    Returns:
        The matched pairs and diffs and the unmatched keys.
    """
    modules = dict(model.named_modules())
    matched = MatchedLora(unmatched_keys=list(state.foreign_keys))
    for path, entry in state.modules.items():
        if entry.has_pair:
            module = modules.get(path)
            shapes = None if module is None else _expected_pair_shapes(base_layer(module), entry.rank)
            if shapes is None:
                matched.unmatched_keys.extend(
                    key for key in entry.keys if not key.endswith((".diff", ".diff_b"))
                )
            else:
                assert entry.down is not None and entry.up is not None
                if tuple(entry.down.shape) != shapes[0]:
                    raise _shape_error(
                        state, entry.keys, f"A of {path!r}", list(shapes[0]), list(entry.down.shape)
                    )
                if tuple(entry.up.shape) != shapes[1]:
                    raise _shape_error(
                        state, entry.keys, f"B of {path!r}", list(shapes[1]), list(entry.up.shape)
                    )
                if entry.up_bias is not None:
                    layer_bias = getattr(base_layer(module), "bias", None)  # type: ignore[arg-type]
                    if layer_bias is None or tuple(entry.up_bias.shape) != tuple(layer_bias.shape):
                        expected = (
                            "absent (the layer has no bias)" if layer_bias is None else list(layer_bias.shape)
                        )
                        raise _shape_error(
                            state, entry.keys, f"lora_B bias of {path!r}", expected, list(entry.up_bias.shape)
                        )
                matched.pairs[path] = entry
        for delta, is_bias in ((entry.diff, False), (entry.diff_b, True)):
            if delta is None:
                continue
            suffixes = (".diff_b",) if is_bias else (".diff", ".diff_m")  # diff_m: LightX2V's modulation delta
            keys = [key for key in entry.keys if key.endswith(suffixes)]
            resolved = _resolve_parameter(modules, path, is_bias)
            if resolved is None:
                matched.unmatched_keys.extend(keys)
                continue
            name, parameter = resolved
            if tuple(delta.shape) != tuple(parameter.shape):
                raise _shape_error(state, keys, name, list(parameter.shape), list(delta.shape))
            matched.diffs[name] = (parameter, delta)
    matched.unmatched_keys.sort()
    return matched
