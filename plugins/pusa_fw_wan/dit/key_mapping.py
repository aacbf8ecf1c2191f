"""State-dict key formats of the Wan DiT (Wan2.1 T2V and Wan2.2 TI2V-5B share them): prefixes, diffusers
names, and config inference from shapes.

Official (released ``Wan-AI/Wan2.1-*``) names are the canonical ones; `WanDiT` uses them. Diffusers
``WanTransformer3DModel`` names are mapped to them, and single files may carry a ``model.diffusion_model.``
or ``diffusion_model.`` prefix (ComfyUI-style repackaging).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from pusa_fw.errors import CheckpointError

from pusa_fw_wan.dit.config import TI2V_MODEL_TYPE, WanConfig

__all__ = [
    "KNOWN_PREFIXES",
    "diffusers_to_official",
    "infer_config",
    "is_diffusers_naming",
    "official_to_diffusers",
    "strip_prefix",
]

KNOWN_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
TI2V_CHANNELS = 48
"""Latent channels of Wan2.2 TI2V-5B (its VAE's z_dim), the one Wan DiT with 48 in and out."""

# (diffusers prefix, official prefix) inside "blocks.{i}."; exact names are matched whole.
_BLOCK_PREFIXES = (
    ("attn1.to_q.", "self_attn.q."),
    ("attn1.to_k.", "self_attn.k."),
    ("attn1.to_v.", "self_attn.v."),
    ("attn1.to_out.0.", "self_attn.o."),
    ("attn1.norm_q.", "self_attn.norm_q."),
    ("attn1.norm_k.", "self_attn.norm_k."),
    ("attn2.to_q.", "cross_attn.q."),
    ("attn2.to_k.", "cross_attn.k."),
    ("attn2.to_v.", "cross_attn.v."),
    ("attn2.to_out.0.", "cross_attn.o."),
    ("attn2.norm_q.", "cross_attn.norm_q."),
    ("attn2.norm_k.", "cross_attn.norm_k."),
    ("norm2.", "norm3."),
    ("ffn.net.0.proj.", "ffn.0."),
    ("ffn.net.2.", "ffn.2."),
)
_BLOCK_EXACT = (("scale_shift_table", "modulation"),)
_TOP_PREFIXES = (
    ("condition_embedder.text_embedder.linear_1.", "text_embedding.0."),
    ("condition_embedder.text_embedder.linear_2.", "text_embedding.2."),
    ("condition_embedder.time_embedder.linear_1.", "time_embedding.0."),
    ("condition_embedder.time_embedder.linear_2.", "time_embedding.2."),
    ("condition_embedder.time_proj.", "time_projection.1."),
    ("proj_out.", "head.head."),
    ("patch_embedding.", "patch_embedding."),
)
_TOP_EXACT = (("scale_shift_table", "head.modulation"),)
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")


def strip_prefix(keys: Iterable[str]) -> str:
    """The known prefix every key carries (``""`` if none).

    Raises:
        CheckpointError: some keys carry a known prefix and others do not.
    """
    keys = list(keys)
    for prefix in KNOWN_PREFIXES:
        carrying = sum(key.startswith(prefix) for key in keys)
        if carrying == len(keys) and keys:
            return prefix
        if carrying:
            odd = [key for key in keys if not key.startswith(prefix)][:5]
            raise CheckpointError(
                f"{carrying} keys start with {prefix!r} but {len(keys) - carrying} do not, e.g. {odd}"
            )
    return ""


def is_diffusers_naming(keys: Iterable[str]) -> bool:
    """Whether the (prefix-free) keys use diffusers ``WanTransformer3DModel`` names."""
    return any(key.startswith(("condition_embedder.", "proj_out.")) or ".attn1." in key for key in keys)


def _translate(
    name: str, prefixes: tuple[tuple[str, str], ...], exact: tuple[tuple[str, str], ...], reverse: bool
) -> str | None:
    for diffusers_name, official_name in exact:
        source, target = (official_name, diffusers_name) if reverse else (diffusers_name, official_name)
        if name == source:
            return target
    for diffusers_prefix, official_prefix in prefixes:
        source, target = (
            (official_prefix, diffusers_prefix) if reverse else (diffusers_prefix, official_prefix)
        )
        if name.startswith(source):
            return target + name[len(source) :]
    return None


def _map_key(key: str, reverse: bool) -> str:
    block = _BLOCK_KEY.match(key)
    if block:
        mapped = _translate(block.group(2), _BLOCK_PREFIXES, _BLOCK_EXACT, reverse)
        return key if mapped is None else f"blocks.{block.group(1)}.{mapped}"
    mapped = _translate(key, _TOP_PREFIXES, _TOP_EXACT, reverse)
    return key if mapped is None else mapped


def diffusers_to_official(key: str) -> str:
    """Map one diffusers key to its official name; unknown keys come back unchanged (then get reported)."""
    return _map_key(key, reverse=False)


def official_to_diffusers(key: str) -> str:
    """Map one official key to its diffusers ``WanTransformer3DModel`` name (inverse of the above)."""
    return _map_key(key, reverse=True)


def infer_config(shapes: Mapping[str, tuple[int, ...]], head_dim: int = 128) -> WanConfig:
    """Infer the architecture from official-named tensor shapes (every released Wan DiT has head_dim 128;
    48 channels in and out is TI2V-5B).

    Raises:
        CheckpointError: a tensor the inference needs is missing.
    """
    needed = (
        "patch_embedding.weight",
        "text_embedding.0.weight",
        "time_embedding.0.weight",
        "blocks.0.ffn.0.weight",
        "head.head.weight",
    )
    absent = [name for name in needed if name not in shapes]
    if absent:
        raise CheckpointError(
            f"cannot infer the Wan config: tensors {absent} are missing; pass config=WanConfig(...)"
        )
    dim, in_dim, *patch = shapes["patch_embedding.weight"]
    layers = 1 + max(int(m.group(1)) for key in shapes if (m := _BLOCK_KEY.match(key)))
    patch_volume = patch[0] * patch[1] * patch[2]
    out_dim = shapes["head.head.weight"][0] // patch_volume
    return WanConfig(
        # 48 latent channels in and out: only Wan2.2 TI2V-5B (ComfyUI detects it the same way)
        model_type=TI2V_MODEL_TYPE if in_dim == out_dim == TI2V_CHANNELS else "t2v",
        patch_size=tuple(patch),
        in_dim=in_dim,
        dim=dim,
        num_heads=max(1, dim // head_dim),
        text_dim=shapes["text_embedding.0.weight"][1],
        freq_dim=shapes["time_embedding.0.weight"][1],
        ffn_dim=shapes["blocks.0.ffn.0.weight"][0],
        num_layers=layers,
        out_dim=out_dim,
        qk_norm="blocks.0.self_attn.norm_q.weight" in shapes,
        cross_attn_norm="blocks.0.norm3.weight" in shapes,
    )
