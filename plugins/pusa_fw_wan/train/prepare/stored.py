"""What the cache already holds for a manifest item: clip file names, source hashes, reusable entries.

An item's clips are ``clips/<stem>-<hash of file name>_<NNN>.safetensors``; `reusable_entries` accepts them
only when every clip of the item is present with the item's source hash, caption and settings fingerprint.
A source whose size and modification time are those recorded with its clips is not read again (unless
the run asks to rehash).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from pusa_fw.errors import CheckpointError
from pusa_fw_wan.train.cache_format import read_clip_metadata, read_index
from pusa_fw_wan.train.prepare.manifest import ManifestItem

__all__ = [
    "CLIPS_DIR",
    "clip_path",
    "index_entry",
    "item_key",
    "previous_entries",
    "recorded_hash",
    "remove_stale_clips",
    "reusable_entries",
    "source_stamp",
]

CLIPS_DIR = "clips"


def item_key(file_name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(file_name).stem)[:48] or "item"
    return f"{stem}-{hashlib.sha256(file_name.encode()).hexdigest()[:10]}"


def clip_path(out: Path, key: str, index: int) -> Path:
    return out / CLIPS_DIR / f"{key}_{index:03d}.safetensors"


def source_stamp(path: Path) -> str:
    """``size:mtime_ns`` of a source file; while it is unchanged, the hash recorded with its clips holds."""
    status = path.stat()
    return f"{status.st_size}:{status.st_mtime_ns}"


def recorded_hash(out: Path, key: str, stamp: str) -> str | None:
    """The source hash stored with an item's first clip if it recorded the same stamp, else None."""
    metadata = read_clip_metadata(clip_path(out, key, 0))
    if metadata is None or metadata.get("source_stamp") != stamp:
        return None
    return metadata.get("source_sha256") or None


def index_entry(out: Path, path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    return {
        "file": path.relative_to(out).as_posix(),
        "source": metadata["source"],
        "clip_index": int(metadata["clip_index"]),
        "latents_shape": json.loads(metadata["latents_shape"]),
        "context_shape": json.loads(metadata["context_shape"]),
        "caption": metadata["caption"],
    }


def reusable_entries(
    out: Path, key: str, item: ManifestItem, source_hash: str, settings: str
) -> list[dict] | None:
    """Index entries of an item whose cached clips all match, else None."""
    first = read_clip_metadata(clip_path(out, key, 0))
    if first is None or not first.get("item_clips", "").isdigit():
        return None
    entries = []
    for index in range(int(first["item_clips"])):
        path = clip_path(out, key, index)
        metadata = first if index == 0 else read_clip_metadata(path)
        if metadata is None or (
            metadata.get("source_sha256"),
            metadata.get("settings"),
            metadata.get("caption"),
            metadata.get("source"),
        ) != (source_hash, settings, item.caption, item.file_name):
            return None
        entries.append(index_entry(out, path, metadata))
    return entries


def remove_stale_clips(out: Path, key: str, count: int) -> None:
    for path in (out / CLIPS_DIR).glob(f"{key}_*.safetensors"):
        suffix = path.stem.rsplit("_", 1)[-1]
        if suffix.isdigit() and int(suffix) >= count:
            path.unlink(missing_ok=True)


def previous_entries(out: Path) -> dict[str, list[dict[str, Any]]]:
    """The entries of an earlier run's index by source ({} when there is none or it is unreadable)."""
    try:
        clips = read_index(out).get("clips", [])
    except CheckpointError:
        return {}
    grouped: dict[str, list[dict[str, Any]]] = {}
    for entry in clips:
        if (
            isinstance(entry, dict)
            and isinstance(entry.get("source"), str)
            and (out / str(entry["file"])).is_file()
        ):
            grouped.setdefault(entry["source"], []).append(entry)
    return grouped
