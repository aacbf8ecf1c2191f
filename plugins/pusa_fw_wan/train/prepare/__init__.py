"""``pusa-fw prepare``: a folder of captioned videos and images -> a cache of latents and text embeddings.

Typical use::

    from pusa_fw_wan.train.prepare import PrepareConfig, load_wan_encoders, prepare_dataset

    codec, text = load_wan_encoders("Wan2.1-T2V-14B")
    summary = prepare_dataset(PrepareConfig(data="clips/", out="cache/"), codec, text)
    print("\\n".join(summary.lines()))

Names are imported on first access (PyAV and Pillow load only when media is read).
"""

from __future__ import annotations

from pusa_fw.lazy import lazy_exports

_EXPORTS = {
    "PrepareConfig": ".config",
    "ManifestItem": ".manifest",
    "read_manifest": ".manifest",
    "ClipPlan": ".clips",
    "plan_clips": ".clips",
    "aspect_buckets": ".buckets",
    "nearest_bucket": ".buckets",
    "VideoCodec": ".encoders",
    "TextEmbedder": ".encoders",
    "WanCodec": ".encoders",
    "WanTextEmbedder": ".encoders",
    "load_wan_encoders": ".encoders",
    "PrepareSummary": ".run",
    "SkippedItem": ".run",
    "prepare_dataset": ".run",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
