"""Per-model generation defaults: Wan2.1 T2V (pusa-fw's own) and Wan2.2 TI2V-5B (the official ones).

Which model a checkpoint holds is read from its DiT config (``config.json`` or the tensor shapes, no weight
is read): ``model_type: "ti2v"`` (48 latent channels) is TI2V-5B, anything else a Wan2.1-style T2V DiT.
TI2V-5B's defaults are those of the official ``wan/configs/wan_ti2v_5B.py`` and ``generate.py``: 1280x704,
121 frames at 24 fps, 50 UniPC steps at shift 5, guidance 5; its own image-to-video holds the first
latent frame clean (t = 0, the image latent re-imposed after every step: ``i2v`` at strength 1).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "WAN21_T2V_DEFAULTS",
    "WAN22_TI2V_5B_DEFAULTS",
    "ModelDefaults",
    "defaults_for_checkpoint",
    "defaults_for_config",
    "defaults_for_dit",
]


@dataclass(frozen=True)
class ModelDefaults:
    """The generation settings a model uses when the user gives none.

    Attributes:
        model: the model family, for messages and the sidecar.
        num_frames: pixel frames.
        height: pixels.
        width: pixels.
        fps: frame rate of the output.
        num_steps: denoising steps.
        shift: sigma shift of the schedule.
        cfg: classifier-free guidance scale.
        sampler: registered sampler name.
        i2v_strength: hold strength of the ``i2v`` image when the user sets neither a strength nor a policy
            (1 = held clean, as TI2V's own image-to-video); None keeps the task's default (Pusa's 0.8).
    """

    model: str
    num_frames: int
    height: int
    width: int
    fps: int
    num_steps: int
    shift: float
    cfg: float
    sampler: str
    i2v_strength: float | None = None

    def generate_values(self) -> dict[str, Any]:
        """The `GenerateConfig` field values these defaults set (not ``model`` nor ``i2v_strength``)."""
        values = asdict(self)
        values.pop("model")
        values.pop("i2v_strength")
        return values


WAN21_T2V_DEFAULTS = ModelDefaults(
    model="Wan2.1 T2V", num_frames=81, height=480, width=832, fps=16, num_steps=10, shift=5.0, cfg=3.0,
    sampler="euler",
)
"""pusa-fw's defaults for Wan2.1 T2V (with the Pusa LoRA: 10 Euler steps, cfg 3); `GenerateConfig`'s."""

WAN22_TI2V_5B_DEFAULTS = ModelDefaults(
    model="Wan2.2 TI2V-5B", num_frames=121, height=704, width=1280, fps=24, num_steps=50, shift=5.0, cfg=5.0,
    sampler="unipc", i2v_strength=1.0,
)
"""The official Wan2.2 TI2V-5B defaults (``wan_ti2v_5B.py``; ``--size 1280*704``, solver unipc)."""


def defaults_for_config(config: Any) -> ModelDefaults:
    """The defaults of the DiT described by `config` (a `WanConfig`; anything without ``is_ti2v``: Wan2.1)."""
    return WAN22_TI2V_5B_DEFAULTS if getattr(config, "is_ti2v", False) else WAN21_T2V_DEFAULTS


def defaults_for_dit(dit: Any) -> ModelDefaults:
    """The defaults of a loaded DiT (its ``config``; wrappers without one get Wan2.1's)."""
    return defaults_for_config(getattr(dit, "config", None))


def defaults_for_checkpoint(path: str | os.PathLike[str]) -> ModelDefaults:
    """The defaults of the DiT checkpoint at `path`, read from its config or tensor shapes (no weights).

    Raises:
        CheckpointError: the checkpoint cannot be read (`pusa_fw_wan.dit.checkpoint_source.read_wan_config`).
    """
    from pusa_fw_wan.dit.checkpoint_source import read_wan_config

    return defaults_for_config(read_wan_config(path))
