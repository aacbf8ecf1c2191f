"""The toy model format, registered with the core so ``--model DIR`` of ``pusa-fw generate`` loads toy models.

A directory holding a ``toy.json`` is a toy model: a `WanDiT` checkpoint with a pixel-unshuffle codec and a
word-level text encoder, which stand in for the Wan-VAE and umT5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pusa_fw.geometry import LatentGeometry
from pusa_fw.model_formats import FormatModels

__all__ = ["ToyModelFormat"]


class ToyModelFormat:
    """`pusa_fw.model_formats.ModelFormat` of toy model directories (a ``toy.json`` manifest)."""

    name = "pusa-fw-toy"

    def detect(self, path: Path) -> bool:
        """Whether `path` is a directory holding a ``toy.json``."""
        from pusa_fw_toy.model_dir import is_toy_dir

        return is_toy_dir(path)

    def geometry(self, path: Path) -> LatentGeometry:
        """The codec's `LatentGeometry`, read from ``toy.json``."""
        from pusa_fw_toy.model_dir import read_spec

        return read_spec(path).codec.geometry()

    def codec(self, path: Path) -> Any:
        """The pixel-unshuffle codec described by ``toy.json`` (no weights), in eval mode."""
        from pusa_fw_toy.codec import ToyCodec
        from pusa_fw_toy.model_dir import read_spec

        return ToyCodec(read_spec(path).codec).eval()

    def load(self, path: Path, *, dtype: Any, device: Any) -> FormatModels:
        """DiT (in `dtype`), codec and text encoder on `device`."""
        from pusa_fw_toy.model_dir import load_toy_models

        toy = load_toy_models(path, dtype=dtype, device=device)
        return FormatModels(dit=toy.dit, vae=toy.codec, text_encoder=toy.text_encoder)
