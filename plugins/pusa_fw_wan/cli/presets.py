"""Named sampling recipes for ``pusa-fw generate --preset NAME`` (run-file key ``preset = "NAME"``).

A preset fills in the `GenerateConfig` fields it names; every value given explicitly (a flag, or a key of
the run file) overrides the preset's. The LoRA files are not part of a preset: pass them with ``--lora``.

``lightx2v`` is LightX2V's 4-step recipe for its Wan2.1 step/CFG-distill LoRA (and the Wan2.2-Lightning
LoRA that Pusa's scripts merge into Wan2.1 too): 4 steps at Wan timesteps 1000/750/500/250 warped with
shift 5, i.e. sigmas 1.0, 0.9375, 0.8333, 0.625, then 0 (Pusa's own 4-step grid at shift 5 is the same
list), guidance off (cfg 1: one forward per step), and LightX2V's deterministic Euler step (its scheduler
since late 2025). ``lightx2v-lcm`` is the same with the LCM step it used before (x0 re-noised with fresh
noise every step; ``--sampler lcm``).

Example::

    pusa-fw generate --preset lightx2v --task i2v --image cat.png --prompt "a cat" --model Wan2.1-T2V-14B \\
        --lora Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank64.safetensors --lora pusa_v1.safetensors:1.4
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["PRESETS", "Preset", "apply_preset", "check_preset_name"]


@dataclass(frozen=True)
class Preset:
    """A named set of `GenerateConfig` values.

    Attributes:
        name: the name ``--preset`` takes.
        values: field name -> value.
        summary: one line for ``--help`` and the docs.
    """

    name: str
    values: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


_LIGHTX2V = {"num_steps": 4, "shift": 5.0, "cfg": 1.0}

PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset("lightx2v", {**_LIGHTX2V, "sampler": "euler"},
               "LightX2V / Lightning 4-step LoRA: 4 steps, shift 5, cfg 1, euler"),
        Preset("lightx2v-lcm", {**_LIGHTX2V, "sampler": "lcm"},
               "LightX2V / Lightning 4-step LoRA with its original LCM step: 4 steps, shift 5, cfg 1, lcm"),
    )
}
"""Every preset by name."""


def apply_preset(values: dict[str, Any]) -> dict[str, Any]:
    """`values` with the named preset's values filled in where `values` has none of its own.

    An unknown name leaves `values` as they are; `check_preset_name` (the field's validator) reports it.

    Args:
        values: `GenerateConfig` field values (explicitly given ones), possibly with ``preset``.
    """
    name = values.get("preset")
    preset = PRESETS.get(name) if isinstance(name, str) else None
    return values if preset is None else {**preset.values, **values}


def check_preset_name(name: str | None) -> str | None:
    """`name` when it is None or a known preset.

    Raises:
        ValueError: an unknown name (pydantic turns it into a one-line error naming ``--preset``).
    """
    if name is not None and name not in PRESETS:
        raise ValueError(f"preset {name!r} is unknown; choose one of {', '.join(sorted(PRESETS))}")
    return name
