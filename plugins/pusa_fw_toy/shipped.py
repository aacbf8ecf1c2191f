"""The toy models trained here and shipped inside the package: a base text-to-video model and VTA LoRAs.

Layout of ``pusa_fw_toy/weights/``::

    base/                    a toy model directory (``pusa-fw generate --model``; ``eval-toy --base``)
    vta-s<N>.safetensors     the VTA LoRA of training seed N (``--lora``), alpha = rank (scale 1)
    MANIFEST.json            how each file was made (config, data seed, steps, wall time, machine, command),
                             the quality gates the base passed or missed, and every file's sha256

`verify_shipped` re-hashes the files against the manifest, so a truncated or swapped file is caught before
it is used; `shipped_model_dir` and `shipped_lora` return verified paths.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from pusa_fw.errors import CheckpointError
from pusa_fw.io.files import file_sha256  # hashed afresh: no hash cache is trusted for verification

__all__ = ["SHIPPED_ROOT", "file_sha256", "read_manifest", "shipped_lora", "shipped_model_dir", "verify_shipped"]

SHIPPED_ROOT = Path(__file__).resolve().parent / "weights"
MANIFEST = "MANIFEST.json"


def read_manifest(root: Path = SHIPPED_ROOT) -> dict[str, Any]:
    """The parsed ``MANIFEST.json`` of a shipped-weights folder.

    Raises:
        CheckpointError: the manifest is missing or not JSON with a ``files`` table.
    """
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{str(path)!r} is missing or not JSON ({error}); reinstall pusa-fw") from error
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise CheckpointError(f"{str(path)!r} has no 'files' table; reinstall pusa-fw")
    return manifest


def verify_shipped(root: Path = SHIPPED_ROOT) -> dict[str, Any]:
    """Check every file the manifest lists against its size and sha256.

    Returns:
        The manifest.

    Raises:
        CheckpointError: a listed file is missing, has another size or another sha256 (names the file).
    """
    manifest = read_manifest(root)
    for name, entry in manifest["files"].items():
        path = root / name
        if not path.is_file():
            raise CheckpointError(f"shipped file {str(path)!r} is missing; reinstall pusa-fw")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise CheckpointError(f"shipped file {str(path)!r} has {size} bytes, the manifest says "
                                  f"{entry['bytes']}; it is damaged, reinstall pusa-fw")
        digest = file_sha256(path)
        if digest != entry["sha256"]:
            raise CheckpointError(f"shipped file {str(path)!r} has sha256 {digest}, the manifest says "
                                  f"{entry['sha256']}; it is damaged, reinstall pusa-fw")
    return manifest


@cache
def _verified(root: Path) -> dict[str, Any]:
    return verify_shipped(root)


def shipped_model_dir(root: Path = SHIPPED_ROOT) -> Path:
    """The shipped base model directory, after checking the shipped files' hashes."""
    _verified(root)
    return root / "base"


def shipped_lora(seed: int = 0, root: Path = SHIPPED_ROOT) -> Path:
    """The shipped VTA LoRA of training seed `seed`, after checking the shipped files' hashes.

    Raises:
        CheckpointError: no LoRA of that seed is shipped (names the seeds there are).
    """
    manifest = _verified(root)
    name = f"vta-s{seed}.safetensors"
    if name not in manifest["files"]:
        seeds = sorted(int(key[5:-12]) for key in manifest["files"] if key.startswith("vta-s"))
        raise CheckpointError(f"no VTA LoRA of training seed {seed} is shipped; choose from {seeds}")
    return root / name
