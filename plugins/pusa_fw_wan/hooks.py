"""Plugin hooks of ``pusa_fw_wan``: registers the Wan DiT backbones (Wan2.1 T2V, Wan2.2 TI2V-5B, Wan2.2 A14B).

Nothing heavy is imported here: torch and the model code load only when a factory's `load` is called.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pusa_fw.geometry import WAN21_GEOMETRY, LatentGeometry
from pusa_fw.hookspecs import Register, hookimpl

from pusa_fw_wan.cli.commands import register_commands  # re-exported: the generate command is this plugin's hook too

if TYPE_CHECKING:
    from pusa_fw.backbone import LoraFile

    from pusa_fw_wan.dit.model import WanDiT

__all__ = [
    "WAN22_TI2V_GEOMETRY",
    "Wan22ExpertsBackboneFactory",
    "WanT2VBackboneFactory",
    "WanTI2VBackboneFactory",
    "register_backbones",
    "register_commands",
    "register_train_adapters",
    "register_training_sources",
]


class WanT2VBackboneFactory:
    """Loads `pusa_fw_wan.WanDiT` (Wan2.1 text-to-video DiT with per-frame timesteps) from a checkpoint;
    saves one and applies LoRA files to one (the optional ``save`` and ``apply_loras`` of `pusa_fw.backbone`)."""

    name = "wan2.1-t2v"
    summary = "Wan2.1 T2V DiT (1.3B / 14B; Pusa V1.0 base) with one timestep per latent frame"
    geometry = WAN21_GEOMETRY
    """The latent geometry of the codec it is paired with (the Wan2.1 VAE)."""

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

        from pusa_fw_wan.dit.model import WanDiT

        return WanDiT.from_pretrained(
            path, dtype=torch.float32 if dtype is None else dtype, device=device, **kwargs
        )

    def save(self, model: Any, directory: str | os.PathLike[str]) -> Path:
        """Write `model` as an official checkpoint directory: ``config.json`` + one weights file.

        The inverse of `load` (see `pusa_fw.backbone.BACKBONE_CAPABILITIES`): the weights go to
        ``diffusion_pytorch_model.safetensors`` as stored (contiguous, on the CPU), each file atomically.

        Args:
            model: a `WanDiT` carrying no LoRA adapters.
            directory: created if missing (its parent must exist); files of the same names are replaced.

        Returns:
            The directory.
        """
        import json

        from pusa_fw.io.atomic import atomic_write_bytes

        from pusa_fw_wan.dit.checkpoint import _WEIGHTS_NAME as WEIGHTS_NAME
        from pusa_fw_wan.weights.files import write_tensor_file

        root = Path(directory).expanduser()
        root.mkdir(exist_ok=True)
        write_tensor_file(root / WEIGHTS_NAME, dict(model.state_dict()), metadata={"format": "pt"})
        config = json.dumps(model.config.to_official_json(), indent=2)
        atomic_write_bytes(root / "config.json", config.encode())
        return root

    def apply_loras(self, model: Any, loras: Sequence[LoraFile], *, merge: bool = False) -> Any:
        """Apply LoRA files of any layout `pusa_fw_wan.lora` reads, each ``(path, strength)``.

        See `pusa_fw_wan.lora.apply.apply_loras` (strict: every key must match a module).

        Returns:
            The `pusa_fw_wan.lora.LoraReport`.
        """
        from pusa_fw_wan.lora.apply import LoraSpec, apply_loras

        specs = [LoraSpec(path, strength=strength) for path, strength in loras]
        return apply_loras(model, specs, merge=merge)


WAN22_TI2V_GEOMETRY = LatentGeometry(spatial_factor=16, channels=48)
"""The Wan2.2 VAE's (TI2V-5B): stride 4 with frame 0 alone, /16 spatial, DiT patch 2, 48 channels."""


class WanTI2VBackboneFactory(WanT2VBackboneFactory):
    """Loads Wan2.2 TI2V-5B as a `pusa_fw_wan.WanDiT` (the same network with 48 channels; per-frame
    timesteps, frame 0 at 0 for its own image-to-video); saves it and applies LoRAs like ``wan2.1-t2v``."""

    name = "wan2.2-ti2v-5b"
    summary = "Wan2.2 TI2V-5B DiT (48 channels, Wan2.2 VAE) with one timestep per latent frame"
    geometry = WAN22_TI2V_GEOMETRY
    """The latent geometry of the Wan2.2 VAE it is paired with."""

    def load(
        self, path: str | os.PathLike[str], dtype: Any = None, device: Any = "cpu", **kwargs: Any
    ) -> WanDiT:
        """Load the TI2V DiT (official release, sharded, diffusers or ComfyUI single file).

        Raises:
            CheckpointError: the checkpoint is not a TI2V DiT (e.g. Wan2.1 T2V: load it as ``wan2.1-t2v``).
        """
        from pusa_fw.errors import CheckpointError

        model = super().load(path, dtype=dtype, device=device, **kwargs)
        if not model.config.is_ti2v:
            raise CheckpointError(
                f"{str(path)!r} holds a {model.config.in_dim}-channel {model.config.model_type} DiT, not Wan2.2 "
                "TI2V-5B; load it as the 'wan2.1-t2v' backbone"
            )
        return model


class Wan22ExpertsBackboneFactory:
    """Loads `pusa_fw_wan.WanExpertsBackbone` (Wan2.2 A14B: high- and low-noise experts by explicit role)."""

    name = "wan2.2-a14b"
    summary = "Wan2.2 A14B: high-noise and low-noise experts switched by the step's sigma (boundary 0.875)"
    geometry = WAN21_GEOMETRY
    """A14B uses the Wan2.1 VAE."""

    def load(self, high_noise: str | os.PathLike[str], low_noise: str | os.PathLike[str], dtype: Any = None,
             device: Any = "cpu", **kwargs: Any) -> Any:
        """Load both experts, each from its own directory (``high_loras``/``low_loras`` go to each)."""
        import torch

        from pusa_fw_wan.dit.experts import WanExpertsBackbone

        dtype = torch.float32 if dtype is None else dtype
        return WanExpertsBackbone.from_pretrained(high_noise, low_noise, dtype=dtype, device=device, **kwargs)


@hookimpl
def register_backbones(register: Register) -> None:
    """Register the Wan2.1 T2V backbone (``wan2.1-t2v``), Wan2.2 TI2V-5B (``wan2.2-ti2v-5b``) and the Wan2.2
    A14B experts (``wan2.2-a14b``)."""
    register(WanT2VBackboneFactory(), name="wan2.1-t2v")
    register(WanTI2VBackboneFactory(), name="wan2.2-ti2v-5b")
    register(Wan22ExpertsBackboneFactory(), name="wan2.2-a14b")



@hookimpl
def register_train_adapters(register: Register) -> None:
    """Register how ``pusa-fw train`` builds, shards, renders and exports the Wan2.1 T2V and Wan2.2 TI2V-5B DiTs."""
    from pusa_fw_wan.train.adapter import WanTI2VTrainAdapter, WanTrainAdapter

    register(WanTrainAdapter(), name="wan2.1-t2v")
    register(WanTI2VTrainAdapter(), name="wan2.2-ti2v-5b")


@hookimpl
def register_training_sources(register: Register) -> None:
    """Register ``cache``: the latent cache written by ``pusa-fw prepare`` (options: directory, ...)."""
    register(_open_cache, name="cache")


def _open_cache(**options: Any) -> Any:
    """`pusa_fw_wan.train.cache.LatentCache`, imported when a run opens it."""
    from pusa_fw_wan.train.cache import LatentCache

    return LatentCache(**options)
