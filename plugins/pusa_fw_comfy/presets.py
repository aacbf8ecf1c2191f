"""What the Pusa Preset node outputs: a ``pusa-fw generate --preset`` recipe's sampling values.

The values are read from the CLI's own table (`pusa_fw_wan.cli.presets.PRESETS`), never repeated here, so
``--preset lightx2v`` on the command line and the node in ComfyUI always agree. A value a preset does not
set is ``pusa-fw generate``'s default for it, as it is on the command line.
"""

from __future__ import annotations

from typing import Any

from pusa_fw.errors import InputError

__all__ = ["PRESET_OUTPUTS", "preset_values"]

PRESET_OUTPUTS = ("num_steps", "shift", "cfg", "sampler")
"""The node's outputs, in order: `GenerateConfig` fields the Pusa Task (steps, shift) and Sampler take."""


def preset_values(name: str, samplers: list[str]) -> dict[str, Any]:
    """The values `name` gives the node's outputs (`PRESET_OUTPUTS`).

    Args:
        name: a preset name (``lightx2v``, ``lightx2v-lcm``).
        samplers: the registered sampler names (the Pusa Sampler's combo options); a linked combo value
            is not checked against its options by ComfyUI, so the preset's sampler is checked here.

    Raises:
        InputError: an unknown preset, or one whose sampler is not registered (one line each).
    """
    from pusa_fw_wan.cli.generate_config import GenerateConfig
    from pusa_fw_wan.cli.presets import PRESETS

    preset = PRESETS.get(name)
    if preset is None:
        raise InputError(f"preset {name!r} is unknown; choose one of {', '.join(sorted(PRESETS))}")
    fields = GenerateConfig.model_fields
    values = {field: preset.values.get(field, fields[field].default) for field in PRESET_OUTPUTS}
    if values["sampler"] not in samplers:
        raise InputError(
            f"preset {name!r} uses sampler {values['sampler']!r}, which no installed plugin registers "
            f"(registered: {', '.join(samplers)}); install pusa-fw with that sampler"
        )
    return {"num_steps": int(values["num_steps"]), "shift": float(values["shift"]), "cfg": float(values["cfg"]),
            "sampler": str(values["sampler"])}
