"""Prompt side of the umT5 encoder: the official cleaning, tokenizer loading, tokenizer identity."""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
from pathlib import Path
from typing import Any

from pusa_fw.errors import InputError

__all__ = ["clean_prompt", "load_tokenizer", "tokenizer_identity"]

_WHITESPACE = re.compile(r"\s+")


def clean_prompt(text: str) -> str:
    """The official prompt cleaning (`wan/modules/tokenizers.py`, 'whitespace' mode).

    `ftfy.fix_text`, `html.unescape` twice, strip, then every whitespace run becomes one space.

    Raises:
        InputError: ftfy is not installed (install `pusa-fw[wan]`).
    """
    try:
        import ftfy
    except ImportError as error:
        raise InputError(
            "prompt cleaning needs ftfy: pip install 'pusa-fw[wan]' (or pip install ftfy)"
        ) from error
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip()


def load_tokenizer(source: str | os.PathLike[str]) -> Any:
    """Load a tokenizer directory with transformers' `AutoTokenizer`.

    Raises:
        InputError: the directory is missing or holds no loadable tokenizer.
    """
    from transformers import AutoTokenizer

    directory = Path(source).expanduser()
    if not directory.is_dir():
        raise InputError(
            f"tokenizer directory {str(directory)!r} does not exist; pass the umT5 tokenizer directory "
            "(google/umt5-xxl, shipped inside the Wan2.1 checkpoint folder)"
        )
    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError, TypeError) as error:
        raise InputError(f"cannot load a tokenizer from {str(directory)!r}: {error}") from error


def tokenizer_identity(tokenizer: Any) -> str:
    """sha256 of a fast tokenizer's full JSON definition (vocab, normalizer, post-processor)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise InputError(
            f"caching prompts needs a fast tokenizer (tokenizer.json); got {type(tokenizer).__name__}: "
            "pass cache_dir=None or a directory with tokenizer.json"
        )
    definition = backend.to_str() + json.dumps([tokenizer.padding_side, tokenizer.pad_token_id])
    return hashlib.sha256(definition.encode("utf-8")).hexdigest()
