"""LoRA for Wan models: file formats, name normalisation, matching, runtime application and reports."""

from __future__ import annotations

from pusa_fw_wan.lora import apply as _apply
from pusa_fw_wan.lora.apply import (
    AppliedLora,
    LoraModuleWeights,
    LoraReport,
    LoraSpec,
    LoraState,
    apply_loras,
    load_lora_state,
    lora_strengths,
    merge_loras,
    parse_lora_state_dict,
    remove_loras,
    set_lora_strength,
    unmerge_loras,
)

__all__ = list(_apply.__all__)
