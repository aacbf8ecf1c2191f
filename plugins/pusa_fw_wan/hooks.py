"""Plugin hooks of ``pusa_fw_wan``: registers the Wan2.1 T2V DiT backbone.

Nothing heavy is imported here: torch and the model code load only when a factory's `load` is called.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from pusa_fw.hookspecs import Register, hookimpl

if TYPE_CHECKING:
    from .dit import WanDiT

__all__ = ["WanT2VBackboneFactory", "register_backbones"]


class WanT2VBackboneFactory:
    """Loads `pusa_fw_wan.WanDiT` (Wan2.1 text-to-video DiT with per-frame timesteps) from a checkpoint."""

    name = "wan2.1-t2v"
    summary = "Wan2.1 T2V DiT (1.3B / 14B; Pusa V1.0 base) with one timestep per latent frame"

    def load(
        self, path: str | os.PathLike[str], dtype: Any = None, device: Any = "cpu", **kwargs: Any
    ) -> WanDiT:
        """Load the DiT from an official, sharded, diffusers or single-file checkpoint.

        Args:
            path: checkpoint directory or file.
            dtype: compute dtype of the large linears (default ``torch.float32``).
            device: target device.
            **kwargs: passed to `WanDiT.from_pretrained` (e.g. ``config``).
        """
        import torch

        from .dit import WanDiT

        return WanDiT.from_pretrained(
            path, dtype=torch.float32 if dtype is None else dtype, device=device, **kwargs
        )


@hookimpl
def register_backbones(register: Register) -> None:
    """Register the Wan2.1 T2V backbone factory under ``wan2.1-t2v``."""
    register(WanT2VBackboneFactory(), name="wan2.1-t2v")


from .commands import register_commands  # noqa: F401
