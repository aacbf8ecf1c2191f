"""Validation and renders of `Trainer` (`TrainerEvaluation`): the held-out samples, the held-out FAFM loss
per plan and sigma bin, and the sample renders (EMA weights when EMA is on).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pusa_fw.errors import InputError

from .renders import RenderSetup, build_render_tasks, render_tasks, swapped_weights
from .step import collate
from .validation import plan_sigma_vectors, validation_losses

__all__ = ["TrainerEvaluation"]


class TrainerEvaluation:
    """`Trainer.validate`, `Trainer.render` and their setup (a mixin of `Trainer`)."""

    config: Any
    context: Any
    source: Any
    adapter: Any

    def _held_out_indices(self) -> list[int]:
        section = self.config.validation
        if section.every == 0:
            return []
        count = len(self.source)
        if section.num_samples >= count:
            raise InputError(
                f"validation.num_samples={section.num_samples} leaves no training sample out of {count}; "
                "lower it"
            )
        return list(range(count - section.num_samples, count))

    def _render_index(self) -> int:
        """The sample renders use (prompt, held frames): the first held-out one, else the last."""
        return self._validation_indices[0] if self._validation_indices else len(self.source) - 1

    def _render_setup(self) -> RenderSetup | None:
        section = self.config.validation
        if not section.render_tasks:
            return None
        if self.context.strategy == "fsdp" and self.context.is_distributed:
            raise InputError("validation.render_tasks is not supported with FSDP (sharded weights); clear it")
        codec = self.adapter.codec(self.config.model.path)
        latents_count = int(self.source.load(self._render_index()).latents.shape[1])
        setup = RenderSetup(codec, build_render_tasks(section.render_tasks, latents_count, codec.geometry))
        if section.render_prompts or section.render_cfg_scale != 1.0:
            from pusa_fw.guidance import Guidance

            encoder = self.adapter.text_encoder(self.config.model.path)
            with torch.no_grad():
                setup.prompts = [
                    (prompt, encoder.encode([prompt]).float().cpu()) for prompt in section.render_prompts
                ]
                if section.render_cfg_scale != 1.0:
                    setup.negative_context = encoder.encode([section.render_negative_prompt]).float().cpu()
            setup.guidance = Guidance(cfg_scale=section.render_cfg_scale)
        return setup

    def validate(self) -> dict[str, float]:
        """Held-out FAFM loss per validation plan and per sigma bin (see `validation`)."""
        section = self.config.validation
        batches = [self._collate_one(index) for index in self._validation_indices]
        if self._validation_plans is None:
            self._validation_plans = plan_sigma_vectors(
                section.plans,
                batches[0].latents.shape[2],
                geometry=self.adapter.geometry(self.config.model.path),
                sigma_bins=section.sigma_bins,
            )
        self.model.eval()
        try:
            return validation_losses(
                self.wrapped,
                batches,
                self._validation_plans,
                seed=section.seed,
                sigma_bins=section.sigma_bins,
                autocast_dtype=self.autocast_dtype,
            )
        finally:
            self.model.train()

    def render(self) -> list[Path]:
        """Write ``<run>/renders/step-XXXXXXX/<task>.mp4|.png`` for every render task (see `renders`).

        Uses the EMA weights when EMA is on (swapped in and restored bit-exactly), else the current ones.
        Call it on the main rank only; it needs ``validation.render_tasks``.
        """
        if self._renders is None:
            raise InputError("no validation.render_tasks configured; set them to render")
        section = self.config.validation
        index = self._render_index()
        batch = self._collate_one(index)
        shadow = self.ema.shadow if self.ema is not None else None
        with swapped_weights(self.tensors, shadow):
            return render_tasks(
                self.model,
                self._renders,
                latents=batch.latents,
                context=batch.context,
                directory=self.run_dir / "renders" / f"step-{self.step:07d}",
                num_steps=section.render_num_steps,
                seed=section.render_seed,
                weights="ema" if shadow is not None else "current",
                step=self.step,
            )

    def _collate_one(self, index: int) -> Any:
        return collate([self.source.load(index)], [index], self.context.device, self.adapter.collate_context)

