"""The sidecar JSON written next to each generated video: how to reproduce it and what it was made from.

It records the seed, the task and its parameters, the plan summary, every input, model and LoRA file
with its size and SHA-256, the package versions and the time split. Hashing a 14B checkpoint takes
about a minute, so file hashes are cached in ``$XDG_CACHE_HOME/pusa_fw/file_hashes.json`` keyed by
resolved path, size and modification time (a changed file is hashed again).
"""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from pusa_fw.io.atomic import atomic_write_bytes
from pusa_fw.io.files import file_sha256 as sha256_of_file

from pusa_fw_wan.weights import CHECKPOINT_FILE_SUFFIXES

__all__ = [
    "PACKAGES", "describe_files", "file_sha256", "package_versions", "sidecar_bytes", "sidecar_path",
    "write_sidecar",
]

SIDECAR_FORMAT = "pusa_fw.generate.v1"
PACKAGES = (
    "pusa-fw", "torch", "transformers", "tokenizers", "peft", "safetensors", "einops", "pydantic", "av",
    "Pillow", "numpy", "tqdm",
)


def sidecar_path(video_path: Path) -> Path:
    """The sidecar of ``out/video.mp4`` is ``out/video.json``."""
    return video_path.with_suffix(".json")


def _hash_cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "pusa_fw" / "file_hashes.json"


def _read_hash_cache(file: Path) -> dict[str, str]:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def file_sha256(path: Path, *, use_cache: bool = True) -> str:
    """SHA-256 of a file's bytes (hex), from the hash cache when the file is unchanged.

    Args:
        path: the file.
        use_cache: read and update the on-disk hash cache (a cache that cannot be written is skipped).
    """
    resolved = path.expanduser().resolve()
    status = resolved.stat()
    key = f"{resolved}:{status.st_size}:{status.st_mtime_ns}"
    cache_file = _hash_cache_file()
    cache = _read_hash_cache(cache_file) if use_cache else {}
    if key in cache:
        return cache[key]
    value = sha256_of_file(resolved)
    if use_cache:
        cache[key] = value
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(cache_file, json.dumps(cache, indent=0, sort_keys=True).encode())
        except OSError:  # a read-only cache directory only costs the next run a re-hash
            pass
    return value


def describe_files(path: Path | None, files: list[Path] | None = None, *,
                   use_cache: bool = True) -> dict[str, Any] | None:
    """Path, and name / bytes / sha256 of the file (or of a directory's weight and config files).

    Args:
        path: a file or a directory.
        files: for a directory, the files to list (default: every weight and config file under it).
        use_cache: use the on-disk hash cache.

    Returns:
        None when `path` is None.
    """
    if path is None:
        return None
    root = path.expanduser()
    if files is not None:
        files = sorted(files)
    elif root.is_dir():
        files = sorted(
            item for item in root.rglob("*") if item.is_file() and item.suffix in CHECKPOINT_FILE_SUFFIXES
        )
    else:
        files = [root]
    return {
        "path": str(root.resolve()),
        "files": [
            {
                "name": str(item.relative_to(root)) if root.is_dir() else item.name,
                "bytes": item.stat().st_size,
                "sha256": file_sha256(item, use_cache=use_cache),
            }
            for item in files
        ],
    }


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that change the numbers (None: not installed), and Python's."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def sidecar_bytes(record: dict[str, Any]) -> bytes:
    """`record` plus format tag, creation time and package versions, as UTF-8 JSON."""
    content = {
        "format": SIDECAR_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **record,
        "versions": package_versions(),
    }
    return (json.dumps(content, indent=2, ensure_ascii=False, default=str) + "\n").encode()


def write_sidecar(path: Path, record: dict[str, Any]) -> Path:
    """Write the sidecar of `record` (see `sidecar_bytes`) to `path` atomically and return the path."""
    return atomic_write_bytes(path, sidecar_bytes(record))
