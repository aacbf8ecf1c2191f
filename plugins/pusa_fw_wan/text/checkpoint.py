"""Loading the umT5-XXL encoder of Wan2.1 into transformers' `UMT5EncoderModel`.

Accepted checkpoints:

- the official `models_t5_umt5-xxl-enc-bf16.pth` (a plain state dict, loaded with
  `torch.load(weights_only=True, mmap=True)`), or a `.safetensors` file with the same original keys;
- a single `.pth` / `.safetensors` file already in transformers' key names (`shared.weight`,
  `encoder.block.{i}...`); the decoder and `lm_head` of a full umT5 checkpoint are not part of the encoder
  and are left out;
- a transformers model directory (`config.json` + weights), loaded with `from_pretrained`.

The original keys (`wan/modules/t5.py`) map one to one onto transformers' names (table in
`docs/wan_reference.md` §4). The model is built on the meta device and the mapped tensors are assigned
into it (`load_state_dict(assign=True)`), so the weights exist once in memory, never twice.
"""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path
from typing import Any

import torch
from transformers import UMT5Config, UMT5EncoderModel

from pusa_fw.errors import CheckpointError, InputError

from pusa_fw_wan.weights import compare_keys, read_tensor_file

__all__ = [
    "UMT5_XXL_DEFAULTS",
    "build_umt5_encoder",
    "check_config_keys",
    "load_t5_file",
    "load_umt5_directory",
    "to_transformers_keys",
    "umt5_config",
    "wan_t5_key_to_transformers",
]

# The released umT5-XXL encoder (wan/modules/t5.py `umt5_xxl`), in UMT5Config terms.
UMT5_XXL_DEFAULTS: dict[str, Any] = {
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "layer_norm_epsilon": 1e-6,
    "dropout_rate": 0.0,
    "is_encoder_decoder": False,
    "tie_word_embeddings": True,
    "use_cache": False,
}

_BLOCK_KEYS = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
_TOP_KEYS = {"token_embedding.weight": "shared.weight", "norm.weight": "encoder.final_layer_norm.weight"}
_BLOCK_PATTERN = re.compile(r"blocks\.(\d+)\.(.+)")
_TIED_EMBEDDING = "encoder.embed_tokens.weight"
_NOT_ENCODER = ("decoder.", "lm_head.")


def check_config_keys(overrides: dict[str, Any]) -> None:
    """Raise InputError naming every key of `overrides` that is not a `UMT5Config` argument."""
    known = set(inspect.signature(UMT5Config.__init__).parameters) - {"self", "kwargs"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InputError(
            f"unknown UMT5Config key(s) {unknown}; use UMT5Config names such as d_model, d_kv, d_ff, "
            "num_layers, num_heads, vocab_size"
        )


def umt5_config(**overrides: Any) -> UMT5Config:
    """The umT5-XXL encoder config with `overrides` (keys as in transformers' `UMT5Config`).

    Raises:
        InputError: an override is not a `UMT5Config` argument.
    """
    check_config_keys(overrides)
    return UMT5Config(**{**UMT5_XXL_DEFAULTS, **overrides})


def wan_t5_key_to_transformers(key: str) -> str:
    """Map one original Wan T5 key to its `UMT5EncoderModel` name (`blocks.3.attn.q.weight` ->
    `encoder.block.3.layer.0.SelfAttention.q.weight`).

    Raises:
        CheckpointError: the key is not part of the Wan umT5 encoder.
    """
    if key in _TOP_KEYS:
        return _TOP_KEYS[key]
    match = _BLOCK_PATTERN.fullmatch(key)
    if match is None or match.group(2) not in _BLOCK_KEYS:
        raise CheckpointError(
            f"key {key!r} is not a Wan umT5 encoder key (expected token_embedding.weight, norm.weight or "
            f"blocks.<i>.{{{', '.join(_BLOCK_KEYS)}}}); is this the models_t5_umt5-xxl-enc file?"
        )
    return f"encoder.block.{match.group(1)}.{_BLOCK_KEYS[match.group(2)]}"


def to_transformers_keys(
    state_dict: dict[str, torch.Tensor], source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Rename a state dict to `UMT5EncoderModel` names; already-renamed dicts pass through.

    Entries are moved, not copied: `state_dict` is emptied.

    Args:
        state_dict: original Wan keys (`token_embedding.weight`, `blocks.{i}...`) or transformers keys.
        source: where the dict came from, for error messages.

    Returns:
        The encoder's tensors under transformers' names (without the tied `encoder.embed_tokens.weight`).
    """
    if "token_embedding.weight" in state_dict:
        return {wan_t5_key_to_transformers(key): state_dict.pop(key) for key in list(state_dict)}
    if "shared.weight" in state_dict or _TIED_EMBEDDING in state_dict:
        renamed: dict[str, torch.Tensor] = {}
        for key in list(state_dict):
            tensor = state_dict.pop(key)
            if not key.startswith(_NOT_ENCODER):
                renamed[key] = tensor
        tied = renamed.pop(_TIED_EMBEDDING, None)
        if "shared.weight" not in renamed and tied is not None:
            renamed["shared.weight"] = tied
        return renamed
    sample = ", ".join(sorted(state_dict)[:5])
    raise CheckpointError(
        f"{source} has neither 'token_embedding.weight' (Wan umT5 keys) nor 'shared.weight' (transformers "
        f"keys); first keys: {sample or '(none)'}. Pass the models_t5_umt5-xxl-enc-bf16.pth file"
    )


def load_t5_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a `.pth` / `.pt` / `.bin` (without pickle, memory-mapped) or `.safetensors` state dict on the CPU.

    Raises:
        CheckpointError: missing file, unknown suffix, or a file that is not a plain tensor dict.
    """
    tensors, _ = read_tensor_file(path, what="text-encoder checkpoint")
    return tensors


def _shape_hint(shapes: dict[str, tuple[int, ...]]) -> str:
    """UMT5Config values read back from checkpoint shapes: the fix to name when the config does not fit."""
    try:
        vocab_size, d_model = shapes["shared.weight"]
        num_layers = len({key.split(".")[2] for key in shapes if key.startswith("encoder.block.")})
        buckets, num_heads = shapes["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
        inner = shapes["encoder.block.0.layer.0.SelfAttention.q.weight"][0]
        d_ff = shapes["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"][0]
    except (KeyError, ValueError):
        return "Pass the models_t5_umt5-xxl-enc file or the matching config overrides."
    return (
        f"The checkpoint has vocab_size={vocab_size}, d_model={d_model}, d_kv={inner // num_heads}, "
        f"d_ff={d_ff}, num_layers={num_layers}, num_heads={num_heads}, "
        f"relative_attention_num_buckets={buckets}: pass these as config overrides"
    )


def build_umt5_encoder(
    state_dict: dict[str, torch.Tensor],
    config: UMT5Config,
    *,
    dtype: torch.dtype | None = None,
    source: str = "checkpoint",
) -> UMT5EncoderModel:
    """Build a `UMT5EncoderModel` on the meta device and assign the tensors of `state_dict` into it.

    Args:
        state_dict: transformers-named encoder tensors (see `to_transformers_keys`); emptied while loading.
        config: the encoder config.
        dtype: cast every tensor to this dtype; `None` keeps the checkpoint's dtype.
        source: where the tensors came from, for error messages.

    Returns:
        The model in eval mode, without gradients, on the device of the tensors.

    Raises:
        CheckpointError: missing, unexpected or wrongly shaped tensors (with the config overrides to use).
    """
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    expected = {
        key: tuple(value.shape) for key, value in model.state_dict().items() if key != _TIED_EMBEDDING
    }
    shapes = {key: tuple(value.shape) for key, value in state_dict.items()}
    compare_keys(shapes, expected).raise_if_bad(source, "the umT5 config", _shape_hint(shapes))
    tensors = {}
    for key in list(state_dict):
        tensor = state_dict.pop(key)
        tensors[key] = tensor if dtype is None else tensor.to(dtype)
    model.load_state_dict(tensors, strict=False, assign=True)
    model.set_input_embeddings(model.shared)  # re-tie: encoder.embed_tokens is the same module as shared
    tensors_now = [*model.named_parameters(), *model.named_buffers()]
    still_meta = [name for name, tensor in tensors_now if tensor.is_meta]
    if still_meta:
        raise CheckpointError(f"{source} left tensors unset after loading: {still_meta[:3]}")
    return model.eval().requires_grad_(False)


def load_umt5_directory(
    directory: Path, *, dtype: torch.dtype | None = None, **overrides: Any
) -> UMT5EncoderModel:
    """Load a transformers model directory (`config.json` + weights) as a `UMT5EncoderModel`.

    Raises:
        CheckpointError: the directory has no `config.json` or its weights do not load.
    """
    check_config_keys(overrides)
    if not (directory / "config.json").is_file():
        raise CheckpointError(
            f"{str(directory)!r} is a directory without config.json; pass the .pth file or a transformers "
            "model directory (save_pretrained)"
        )
    try:
        model = UMT5EncoderModel.from_pretrained(
            directory, dtype=dtype if dtype is not None else "auto", **overrides
        )
    except (OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"cannot load the umT5 encoder from {str(directory)!r}: {error}") from error
    return model.eval().requires_grad_(False)
