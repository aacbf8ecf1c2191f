"""Module-name normalisation for Wan LoRA files: every naming style is mapped to the original Wan names.

The original names (`blocks.3.self_attn.q`, `blocks.3.ffn.0`, `head.head`, ...) are the module paths of
`pusa_fw_wan.dit.WanDiT` and the keys of the released checkpoints, so they are the one canonical form.
Three other styles exist in the wild (`wan_reference.md` §2.2, §2.3):

- diffusers names (`blocks.3.attn1.to_q`, `blocks.3.ffn.net.0.proj`, `proj_out`, ...);
- kohya / musubi-tuner flattened names (`blocks_3_self_attn_q`, after the `lora_unet_` prefix is stripped),
  with either original or diffusers tokens inside;
- prefixes (`diffusion_model.`, `model.diffusion_model.`, `transformer.`, `model.`, `base_model.model.`).

Every rule is a full match of a whole dotted path, never a substring replacement, so the pitfalls of
naive replacement (`cross_attn.k` vs `cross_attn.k_img`, `head.modulation` vs `modulation`, the
`norm2`/`norm3` swap) cannot happen. A name that no rule recognises is returned as `None` and the caller
reports the key as foreign.
"""

from __future__ import annotations

import re

# Longest first: the first prefix that matches is removed, and only one.
KEY_PREFIXES: tuple[str, ...] = (
    "base_model.model.",
    "model.diffusion_model.",
    "diffusion_model.",
    "transformer.",
    "model.",
    "lora_unet_",
)

# Tokens that exist only in diffusers naming; one of them (or the `transformer.` prefix) marks a file
# as diffusers-named, and then every name in it is translated with `_DIFFUSERS_TO_ORIGINAL`.
DIFFUSERS_ONLY_TOKENS: tuple[str, ...] = (
    "attn1",
    "attn2",
    "ffn.net",
    "condition_embedder",
    "proj_out",
    "scale_shift_table",
)

_ATTENTION = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "o"}
_CROSS_EXTRA = {"add_k_proj": "k_img", "add_v_proj": "v_img", "norm_added_k": "norm_k_img"}
_IMAGE_EMBEDDER = {"norm1": "0", "ff.net.0.proj": "1", "ff.net.2": "3", "norm2": "4"}


def _diffusers_block_rule(match: re.Match[str]) -> str | None:
    block, rest = match.group(1), match.group(2)
    for attn, original in (("attn1.", "self_attn."), ("attn2.", "cross_attn.")):
        if rest.startswith(attn):
            inner = rest[len(attn) :]
            if inner in _ATTENTION:
                return f"blocks.{block}.{original}{_ATTENTION[inner]}"
            if inner in ("norm_q", "norm_k"):
                return f"blocks.{block}.{original}{inner}"
            if original == "cross_attn." and inner in _CROSS_EXTRA:
                return f"blocks.{block}.cross_attn.{_CROSS_EXTRA[inner]}"
            return None
    simple = {
        "ffn.net.0.proj": "ffn.0",
        "ffn.net.2": "ffn.2",
        "norm2": "norm3",
        "scale_shift_table": "modulation",
    }
    if rest in simple:
        return f"blocks.{block}.{simple[rest]}"
    return None


def _diffusers_image_rule(match: re.Match[str]) -> str | None:
    inner = match.group(1)
    if inner in _IMAGE_EMBEDDER:
        return f"img_emb.proj.{_IMAGE_EMBEDDER[inner]}"
    if inner == "pos_embed":
        return "img_emb.emb_pos"
    return None


_DIFFUSERS_TOP_LEVEL = {
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.time_proj": "time_projection.1",
    "proj_out": "head.head",
    "scale_shift_table": "head.modulation",
    "patch_embedding": "patch_embedding",
}
_DIFFUSERS_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")
_DIFFUSERS_IMAGE = re.compile(r"condition_embedder\.image_embedder\.(.+)")


def diffusers_to_original(name: str) -> str | None:
    """Translate a diffusers module path to the original Wan path.

    Args:
        name: dotted diffusers path without prefix, e.g. `blocks.0.attn1.to_out.0`.

    Returns:
        The original path (`blocks.0.self_attn.o`), or None when the name is not a Wan diffusers name.
    """
    if name in _DIFFUSERS_TOP_LEVEL:
        return _DIFFUSERS_TOP_LEVEL[name]
    block = _DIFFUSERS_BLOCK.fullmatch(name)
    if block:
        return _diffusers_block_rule(block)
    image = _DIFFUSERS_IMAGE.fullmatch(name)
    if image:
        return _diffusers_image_rule(image)
    return None



_ORIGINAL_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")
_ORIGINAL_TOP_LEVEL = {original: diffusers for diffusers, original in _DIFFUSERS_TOP_LEVEL.items()}
_ORIGINAL_IN_BLOCK = {
    **{f"self_attn.{original}": f"attn1.{diffusers}" for diffusers, original in _ATTENTION.items()},
    **{f"cross_attn.{original}": f"attn2.{diffusers}" for diffusers, original in _ATTENTION.items()},
    **{f"cross_attn.{original}": f"attn2.{diffusers}" for diffusers, original in _CROSS_EXTRA.items()},
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}


def original_to_diffusers(name: str) -> str | None:
    """Translate an original Wan module path to its diffusers path (the inverse of `diffusers_to_original`).

    Covers the modules a LoRA adapts: attention projections, FFN layers and the top-level Linears.

    Args:
        name: dotted original path, e.g. `blocks.0.self_attn.o`.

    Returns:
        The diffusers path (`blocks.0.attn1.to_out.0`), or None when there is no rule for it.
    """
    if name in _ORIGINAL_TOP_LEVEL:
        return _ORIGINAL_TOP_LEVEL[name]
    block = _ORIGINAL_BLOCK.fullmatch(name)
    if block and block.group(2) in _ORIGINAL_IN_BLOCK:
        return f"blocks.{block.group(1)}.{_ORIGINAL_IN_BLOCK[block.group(2)]}"
    return None

# Kohya names flatten every dot to "_"; these rules put the dots back for every Wan module that can
# carry a LoRA or a diff, in original and in diffusers naming (the result is then a dotted name of that
# style).
_KOHYA_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (
            r"blocks_(\d+)_(self_attn|cross_attn)_(q|k|v|o|k_img|v_img|norm_q|norm_k|norm_k_img)",
            r"blocks.\1.\2.\3",
        ),
        (r"blocks_(\d+)_ffn_(0|2)", r"blocks.\1.ffn.\2"),
        (r"blocks_(\d+)_(norm3|modulation)", r"blocks.\1.\2"),
        (r"(text_embedding|time_embedding)_(0|2)", r"\1.\2"),
        (r"time_projection_1", r"time_projection.1"),
        (r"head_(head|modulation)", r"head.\1"),
        (r"patch_embedding", r"patch_embedding"),
        (r"img_emb_proj_(0|1|3|4)", r"img_emb.proj.\1"),
        (
            r"blocks_(\d+)_(attn1|attn2)_(to_q|to_k|to_v|add_k_proj|add_v_proj|norm_q|norm_k)",
            r"blocks.\1.\2.\3",
        ),
        (r"blocks_(\d+)_(attn1|attn2)_to_out_0", r"blocks.\1.\2.to_out.0"),
        (r"blocks_(\d+)_ffn_net_0_proj", r"blocks.\1.ffn.net.0.proj"),
        (r"blocks_(\d+)_ffn_net_2", r"blocks.\1.ffn.net.2"),
        (
            r"condition_embedder_(text_embedder|time_embedder)_linear_(1|2)",
            r"condition_embedder.\1.linear_\2",
        ),
        (r"condition_embedder_time_proj", r"condition_embedder.time_proj"),
        (r"proj_out", r"proj_out"),
    )
)


def kohya_to_dotted(name: str) -> str | None:
    """Re-insert the dots of a kohya flattened module name.

    Args:
        name: flattened name without the `lora_unet_` prefix, e.g. `blocks_12_cross_attn_k_img`.

    Returns:
        The dotted name (`blocks.12.cross_attn.k_img`), or None when no Wan module has that name.
    """
    for pattern, replacement in _KOHYA_RULES:
        if pattern.fullmatch(name):
            return pattern.sub(replacement, name)
    return None


def strip_prefix(key: str) -> tuple[str, str]:
    """Remove one known prefix from a state-dict key.

    Args:
        key: a key as stored in the file.

    Returns:
        `(prefix, rest)`; prefix is "" when the key has none of `KEY_PREFIXES`.
    """
    for prefix in KEY_PREFIXES:
        if key.startswith(prefix):
            return prefix, key[len(prefix) :]
    return "", key


def is_diffusers_name(name: str) -> bool:
    """Whether a dotted module name uses a token that only diffusers naming has."""
    parts = f".{name}."
    return any(f".{token}." in parts for token in DIFFUSERS_ONLY_TOKENS)
