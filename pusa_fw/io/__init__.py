"""File input and output: atomic writes, file hashes and ``.safetensors`` headers, images (Pillow) and
mp4 videos (PyAV).

Names are imported on first access, so `import pusa_fw.io` works without Pillow or PyAV installed;
`pusa_fw.io.save_video` then needs PyAV, `pusa_fw.io.load_image` Pillow (the `video` extra).
"""

from __future__ import annotations

from pusa_fw.lazy import lazy_exports

_EXPORTS = {
    "atomic_path": ".atomic",
    "atomic_write_bytes": ".atomic",
    "check_output_path": ".atomic",
    "file_sha256": ".files",
    "read_safetensors_header": ".files",
    "tensor_shapes": ".files",
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

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
