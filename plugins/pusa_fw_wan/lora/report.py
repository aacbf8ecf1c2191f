"""What `apply_loras` reports: per LoRA file, which modules and parameters it patched and what it skipped."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["AppliedLora", "LoraReport"]


@dataclass(frozen=True)
class AppliedLora:
    """What one LoRA file did to the model.

    Attributes:
        name: adapter name.
        source: the file.
        naming: "original" or "diffusers" module naming in the file.
        strength: strength it was applied with.
        modules: module paths that got a low-rank pair.
        diff_parameters: parameter paths that got a full `diff` / `diff_b` delta.
        ranks: the distinct ranks of its pairs.
        scales: the distinct `alpha / rank` scales of its pairs (1.0 where the file has no alpha).
        unmatched_keys: file keys that named nothing in the model (only non-empty with `strict=False`).
    """

    name: str
    source: Path
    naming: str
    strength: float
    modules: tuple[str, ...]
    diff_parameters: tuple[str, ...]
    ranks: tuple[int, ...]
    scales: tuple[float, ...]
    unmatched_keys: tuple[str, ...]


@dataclass(frozen=True)
class LoraReport:
    """Result of `apply_loras`: one `AppliedLora` per spec, and whether the model is now merged."""

    loras: tuple[AppliedLora, ...]
    merged: bool

    @property
    def unmatched_keys(self) -> dict[str, tuple[str, ...]]:
        """Adapter name -> keys of its file that matched nothing (empty tuples included)."""
        return {lora.name: lora.unmatched_keys for lora in self.loras}

    def summary(self) -> str:
        """A few human-readable lines, one per LoRA (for a CLI to print)."""
        lines = []
        for lora in self.loras:
            lines.append(
                f"{lora.name}: {len(lora.modules)} LoRA modules (rank {list(lora.ranks)}, "
                f"scale {list(lora.scales)}), {len(lora.diff_parameters)} diffs, strength {lora.strength}, "
                f"{len(lora.unmatched_keys)} unmatched keys"
            )
        return "\n".join(lines)
