"""Model formats: how a ``--model`` directory that is not a Wan2.1 release is recognised and loaded.

A plugin registers a model format through the ``register_model_formats`` hook. The Wan plugin's loader asks
every registered format, in name order, whether it claims a directory (`ModelFormat.detect`); the first that
does supplies the latent geometry (read without loading weights) and loads the three models. A directory no
format claims is taken as the Wan2.1 release layout. This keeps the Wan plugin ignorant of the plugins that
add formats (e.g. ``pusa_fw_toy``), and the core ignorant of both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

from .geometry import LatentGeometry

__all__ = ["FormatModels", "ModelFormat", "detect_model_format"]


class FormatModels(NamedTuple):
    """The models a format loads.

    Attributes:
        dit: The denoiser (a module taking latents ``(B, C, F, H, W)``), in eval mode.
        vae: The codec standing in for the VAE (``encode``/``decode`` between pixels and latents).
        text_encoder: The text encoder (prompts -> ``(B, L, text_dim)`` features).
    """

    dit: Any
    vae: Any
    text_encoder: Any


@runtime_checkable
class ModelFormat(Protocol):
    """A registered model format (one object; registered under its ``name``)."""

    name: str

    def detect(self, path: Path) -> bool:
        """Whether the directory `path` is a model of this format (cheap: no weights are read)."""
        ...

    def geometry(self, path: Path) -> LatentGeometry:
        """The latent geometry of the model in `path`, without loading weights.

        Raises:
            CheckpointError: the directory's manifest is missing or invalid.
        """
        ...

    def codec(self, path: Path) -> Any:
        """The codec alone, in eval mode on the CPU.

        Its ``decode`` maps latents ``(B, C, F, H, W)`` to pixels ``(B, 3, T, H', W')``.

        Raises:
            CheckpointError: the directory's manifest is missing or invalid.
        """
        ...

    def load(self, path: Path, *, dtype: Any, device: Any) -> FormatModels:
        """Load the models in `path` onto `device` (the DiT in `dtype`).

        Raises:
            CheckpointError: unreadable or inconsistent files.
        """
        ...


def detect_model_format(path: Path, formats: list[Any]) -> Any | None:
    """The first of `formats` (in the order given) whose ``detect`` claims `path`, else None."""
    for candidate in formats:
        if candidate.detect(path):
            return candidate
    return None
