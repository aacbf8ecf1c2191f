"""Read the captions of a dataset folder: ``metadata.csv`` (columns ``file_name,text``) or ``metadata.jsonl``.

Every row becomes a `ManifestItem`. A row whose caption cannot be read (bytes that are not UTF-8, a JSON
line that does not parse, an empty caption) still becomes an item, with `problem` set, so the run can
name it in its summary instead of stopping. Media paths are relative to the folder, or to its ``train/``
sub-folder (the DiffSynth / Pusa layout).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from pusa_fw.errors import InputError

__all__ = ["IMAGE_SUFFIXES", "MANIFEST_NAMES", "ManifestItem", "read_manifest"]

MANIFEST_NAMES = ("metadata.csv", "metadata.jsonl")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})


@dataclass(frozen=True)
class ManifestItem:
    """One row of the manifest.

    Attributes:
        file_name: the media path as written in the manifest (its identity in the cache).
        path: where the file is on disk (may not exist).
        caption: the caption ("" when `problem` is set).
        problem: why the caption is unusable, or None.
    """

    file_name: str
    path: Path
    caption: str
    problem: str | None = None

    @property
    def is_image(self) -> bool:
        """Whether the file is an image (a one-frame clip), judged by its suffix."""
        return self.path.suffix.lower() in IMAGE_SUFFIXES


def _locate(folder: Path, file_name: str) -> Path:
    direct = folder / file_name
    nested = folder / "train" / file_name
    return nested if not direct.exists() and nested.exists() else direct


def _has_bad_bytes(text: str) -> bool:
    """Whether `text` holds bytes that were not UTF-8 (decoded with ``surrogateescape``)."""
    return any("\udc80" <= char <= "\udcff" for char in text)


def _caption_problem(text: str) -> str | None:
    if _has_bad_bytes(text):
        return "caption is not valid UTF-8; re-save the manifest as UTF-8"
    if not text.strip():
        return "caption is empty; write a caption for it"
    return None


def _read_csv(folder: Path, raw: bytes) -> list[ManifestItem]:
    text = raw.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = {"file_name", "text"} - set(reader.fieldnames or [])
    if missing:
        raise InputError(
            f"{folder / 'metadata.csv'} has columns {reader.fieldnames}; it needs file_name and text"
        )
    items = []
    for row in reader:
        name = row["file_name"] or ""
        caption = row["text"] or ""
        if not name.strip() or _has_bad_bytes(name):
            items.append(ManifestItem(repr(name), folder / "?", "", "file_name is empty or not UTF-8"))
            continue
        problem = _caption_problem(caption)
        items.append(ManifestItem(name, _locate(folder, name), "" if problem else caption, problem))
    return items


def _read_jsonl(folder: Path, raw: bytes) -> list[ManifestItem]:
    items = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        label = f"metadata.jsonl line {number}"
        try:
            row = json.loads(line.decode("utf-8", errors="surrogateescape"))
        except json.JSONDecodeError as error:
            items.append(ManifestItem(label, folder / "?", "", f"line is not JSON ({error.msg})"))
            continue
        name = row.get("file_name") if isinstance(row, dict) else None
        if not isinstance(name, str) or not name.strip() or _has_bad_bytes(name):
            items.append(ManifestItem(label, folder / "?", "", 'line has no UTF-8 "file_name" string'))
            continue
        caption = row.get("text")
        problem = _caption_problem(caption) if isinstance(caption, str) else 'no "text" string'
        items.append(ManifestItem(name, _locate(folder, name), "" if problem else caption, problem))
    return items


def read_manifest(folder: str | Path) -> list[ManifestItem]:
    """All items of a dataset folder's manifest, in file order.

    Raises:
        InputError: the folder is missing, has no manifest, or a CSV manifest lacks its columns.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise InputError(f"dataset folder {str(root)!r} does not exist; pass the folder holding metadata.csv")
    found = [root / name for name in MANIFEST_NAMES if (root / name).is_file()]
    if not found:
        raise InputError(
            f"{str(root)!r} has no {' or '.join(MANIFEST_NAMES)}; write one with columns file_name,text"
        )
    raw = found[0].read_bytes()
    return _read_csv(root, raw) if found[0].suffix == ".csv" else _read_jsonl(root, raw)
