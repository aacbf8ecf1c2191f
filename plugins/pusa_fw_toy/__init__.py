"""pusa-fw plugin: a toy world a CPU can learn, with a lossless codec, a word-level text encoder, a
model-free tracker and the ``eval-toy`` measurement of Pusa's conditioning.

Heavy modules are imported on first attribute access, so ``import pusa_fw_toy`` (and the plugin hooks)
stay cheap.
"""

from __future__ import annotations

from pusa_fw.lazy import lazy_exports

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

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
