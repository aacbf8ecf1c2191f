"""pusa-fw plugin: a toy world a CPU can learn, with a lossless codec, a word-level text encoder, a
model-free tracker and the ``eval-toy`` measurement of Pusa's conditioning.

Heavy modules are imported on first attribute access, so ``import pusa_fw_toy`` (and the plugin hooks)
stay cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "WorldConfig": ".world",
    "WorldClip": ".world",
    "render_clip": ".world",
    "ToyCodec": ".codec",
    "ToyCodecConfig": ".codec",
    "ToyTextEncoder": ".text",
    "Track": ".tracker",
    "track_video": ".tracker",
    "score_video": ".metrics",
    "build_toy_dir": ".model_dir",
    "load_toy_models": ".model_dir",
    "WorldSource": ".source",
    "Replacement": ".policies",
    "EvalConfig": ".evaluate",
    "evaluate": ".evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pusa_fw_toy' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
