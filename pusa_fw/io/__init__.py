"""File input and output: atomic writes, images (Pillow) and mp4 videos (PyAV).

Names are imported on first access, so `import pusa_fw.io` works without Pillow or PyAV installed;
`pusa_fw.io.save_video` then needs PyAV, `pusa_fw.io.load_image` Pillow (the `video` extra).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "atomic_path": ".atomic",
    "atomic_write_bytes": ".atomic",
    "check_output_path": ".atomic",
    "video_to_uint8": ".pixels",
    "uint8_to_video": ".pixels",
    "image_to_uint8": ".pixels",
    "uint8_to_image": ".pixels",
    "read_image": ".image",
    "resize_image": ".image",
    "load_image": ".image",
    "save_image": ".image",
    "save_contact_sheet": ".image",
    "write_video": ".video",
    "save_video": ".video",
    "read_video": ".video_read",
    "load_video": ".video_read",
    "probe_video": ".video_read",
    "resampled_source_index": ".video_read",
    "DecodedVideo": ".video_read",
    "VideoInfo": ".video_read",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pusa_fw.io' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
