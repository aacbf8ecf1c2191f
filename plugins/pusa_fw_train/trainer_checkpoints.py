"""Checkpoints of `Trainer` (`TrainerCheckpoints`): the state dict, saving (safetensors or DCP shards),
restoring, and LoRA exports of a saved checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pusa_fw.errors import InputError

from .checkpoint import CheckpointFiles, begin_checkpoint, write_checkpoint
from .sharded import SHARDED_DIR, safetensors_view, save_sharded
from .state import apply_state, collect_state

__all__ = ["TrainerCheckpoints", "check_checkpoint_format"]


def check_checkpoint_format(checkpoint_format: str, mode: str, strategy: str, world_size: int) -> None:
    """Refuse single-file checkpoints of a full fine-tune sharded by FSDP2 over several ranks.

    Such a save gathers the whole model, both AdamW moments (and the EMA) into rank 0's host memory:
    12 bytes per parameter (fp32 weights and two moments; 16 with an EMA), 168 GB for Wan 14B. DCP shards
    write each rank's own part instead.

    Raises:
        InputError: that combination.
    """
    if checkpoint_format == "safetensors" and mode == "full" and strategy == "fsdp" and world_size > 1:
        raise InputError(
            f"checkpoint.format='safetensors' with mode='full' under FSDP2 on {world_size} ranks gathers the "
            "whole model and optimizer into rank 0's memory; use checkpoint.format='dcp' (or 'auto')"
        )


class TrainerCheckpoints:
    """`Trainer.state_dict`, `load_state_dict`, `save` and `export_lora` (a mixin of `Trainer`)."""

    config: Any
    context: Any
    adapter: Any
    run_dir: Path
    step: int
    _saved_step: int

    def export_lora(self, checkpoint: Path) -> Path:
        """Export `checkpoint`'s LoRA to ``<run>/exports/lora-step-XXXXXXX.safetensors`` (adapter's layout;
        a DCP checkpoint is read whole into a temporary safetensors copy first)."""
        section = self.config.checkpoint
        out = self.run_dir / "exports" / f"lora-step-{self.step:07d}.safetensors"
        out.parent.mkdir(parents=True, exist_ok=True)
        options = {"layout": section.export_layout, "ema": section.export_ema}
        if not (checkpoint / SHARDED_DIR).is_dir():
            return self.adapter.export_lora(checkpoint, out, **options)
        with safetensors_view(checkpoint) as copy:
            return self.adapter.export_lora(copy, out, **options)

    def state_dict(self, *, sharded: bool = False) -> CheckpointFiles | None:
        """Everything a checkpoint holds: weights, AdamW state, EMA, every rank's RNG, step, data position.

        Every rank must call it (sharded tensors are gathered, unless `sharded`: the DCP shards hold them);
        rank 0 gets the content, the others None.
        """
        return collect_state(
            sharded=sharded,
            context=self.context,
            config=self.config,
            step=self.step,
            position=self.position,
            tensors=self.tensors,
            optimizer=self.optimizer,
            ema=self.ema,
            targets=self.targets,
        )

    def load_state_dict(self, state: CheckpointFiles) -> None:
        """Continue from `state` (a checkpoint of a run of the same config); every rank must call it."""
        self.step, self.position = apply_state(
            state,
            context=self.context,
            model=self.model,
            tensors=self.tensors,
            optimizer=self.optimizer,
            ema=self.ema,
        )

    @property
    def sharded_checkpoints(self) -> bool:
        """Whether checkpoints are DCP shards (``checkpoint.format``; auto: a full fine-tune under FSDP2 on
        several ranks; a LoRA's factors stay one safetensors file that ``export-lora`` reads)."""
        wanted = self.config.checkpoint.format
        fsdp = self.context.strategy == "fsdp" and self.context.is_distributed
        return wanted == "dcp" or (wanted == "auto" and fsdp and self.config.mode == "full")

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (every rank calls it).

        Safetensors: the whole state is gathered and rank 0 writes it between barriers. DCP: every rank
        writes its own shards into the directory rank 0 made, then rank 0 adds the rest and the manifest.
        """
        temp = None
        if self.sharded_checkpoints:
            made = begin_checkpoint(self.run_dir, self.step) if self.context.is_main else None
            temp = self.context.broadcast_object(made)
            save_sharded(temp, self.model, self.tensors, self.optimizer, self.ema)
        files = self.state_dict(sharded=temp is not None)
        self._saved_step = self.step
        written = None
        with self.context.main_rank_work() as is_main:
            if is_main and files is not None:
                keep = self.config.checkpoint.keep_last
                written = write_checkpoint(self.run_dir, files, keep_last=keep, temp=temp)
        return written
