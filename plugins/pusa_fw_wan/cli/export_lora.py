"""``pusa-fw export-lora``: one ComfyUI-ready (or diffusers) LoRA file from a training checkpoint or run.

Example:
    ``pusa-fw export-lora runs/pusa --out pusa_lora.safetensors --ema --strength 1.0``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["ExportLoraCommand"]


class ExportLoraCommand:
    """``pusa-fw export-lora CHECKPOINT_OR_RUN_DIR --out FILE.safetensors``."""

    name = "export-lora"
    help = "export a trained LoRA (checkpoint or run directory) as one ComfyUI/diffusers .safetensors file"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Source, output, layout, EMA, strength and base model."""
        from pusa_fw_wan.train.export import LAYOUTS

        parser.description = (
            "Write the LoRA of a pusa-fw training checkpoint (or a run's latest) as one .safetensors "
            "file with "
            "diffusion_model.<module>.lora_A/B.weight and .alpha keys (ComfyUI) or diffusers keys, plus the "
            "training metadata (rank, alpha, targets, PTSS law, base-model hash, step, config)."
        )
        parser.add_argument(
            "source",
            type=Path,
            metavar="CHECKPOINT_OR_RUN_DIR",
            help="a checkpoints/step-XXXXXXX directory, or a run directory (uses its latest)",
        )
        parser.add_argument(
            "--out", type=Path, required=True, metavar="FILE.safetensors", help="file to write"
        )
        parser.add_argument(
            "--layout", choices=LAYOUTS, default="comfyui", help="key layout (default: comfyui)"
        )
        parser.add_argument("--ema", action="store_true", help="export the EMA weights (ema.safetensors)")
        parser.add_argument(
            "--strength",
            type=float,
            default=1.0,
            help="recommended strength written into the metadata (default 1.0: as trained)",
        )
        parser.add_argument(
            "--base-model",
            type=Path,
            metavar="DIR",
            help="base model weights to hash into the metadata (default: the training config's model.path)",
        )

    def run(self, args: argparse.Namespace) -> int:
        """Export; print the written path and a one-line description on stdout."""
        from pusa_fw_wan.train.export import export_lora

        exported = export_lora(
            args.source,
            args.out,
            layout=args.layout,
            ema=args.ema,
            strength=args.strength,
            base_model=args.base_model,
        )
        step = "?" if exported.step is None else exported.step
        sys.stdout.write(
            f"{exported.path}\n{exported.layout}: {exported.modules} modules, rank {exported.rank}, "
            f"alpha {exported.alpha:g}, step {step}\n"
        )
        return 0
