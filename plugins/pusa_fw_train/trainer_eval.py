"""Validation and renders of `Trainer` (`TrainerEvaluation`): the held-out samples, the held-out FAFM loss
per plan and sigma bin, and the sample renders (EMA weights when EMA is on).

Only the main rank renders, so only it builds the render setup (codec, text encoder, encoded prompts); the
other ranks keep None and wait for its verdict on the host group (a setup error is raised on every rank).
Validation is split over the ranks: each evaluates its share of the held-out samples
(`validation.validation_sums`) and one all-reduce adds the sums.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pusa_fw.errors import InputError

from .renders import RenderSetup, build_render_tasks, render_tasks, swapped_weights
from .step import collate
from .validation import plan_sigma_vectors, validation_results, validation_sums

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
        """The main rank's `RenderSetup` (None elsewhere); every rank calls it, and raises the same error."""
        section = self.config.validation
        if not section.render_tasks:
            return None
        if self.context.strategy == "fsdp" and self.context.is_distributed:
            raise InputError("validation.render_tasks is not supported with FSDP (sharded weights); clear it")
        setup, failure = None, None
        if self.context.is_main:
            try:
                setup = self._build_render_setup()
            except Exception as error:  # the other ranks must hear of it instead of waiting forever
                failure = error
        message = self.context.broadcast_object(None if failure is None else str(failure), host=True)
        if failure is not None:
            raise failure
        if message is not None:
            raise InputError(f"rank 0 could not set up the renders: {message}")
        return setup

    def _build_render_setup(self) -> RenderSetup:
        section = self.config.validation
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
        """Held-out FAFM loss per validation plan and per sigma bin (see `validation`), over every rank.

        Rank r evaluates held-out samples r, r + world, ...; every rank runs the same number of forwards
        (a rank short of one repeats a sample with weight 0), as FSDP2's all-gathers need. Under DDP the
        unwrapped model runs (the weights are the same on every rank; the wrapper's forward would sync
        buffers). One all-reduce of the (sum, count) pairs on the host group ends it.
        """
        section = self.config.validation
        indices = self._validation_indices
        rank, world = self.context.rank, self.context.world_size
        share = indices[rank::world]
        rounds = -(-len(indices) // world)
        weights = [1.0] * len(share) + [0.0] * (rounds - len(share))
        batches = [self._collate_one(index) for index in (share + indices[:1] * (rounds - len(share)))]
        if self._validation_plans is None:
            self._validation_plans = plan_sigma_vectors(
                section.plans,
                batches[0].latents.shape[2],
                geometry=self.adapter.geometry(self.config.model.path),
                sigma_bins=section.sigma_bins,
            )
        model = self.model if self.context.strategy == "ddp" else self.wrapped
        self.model.eval()
        try:
            sums = validation_sums(
                model,
                batches,
                self._validation_plans,
                seed=section.seed,
                sigma_bins=section.sigma_bins,
                autocast_dtype=self.autocast_dtype,
                weights=weights,
            )
        finally:
            self.model.train()
        if self.context.is_distributed:
            import torch.distributed as dist

            dist.all_reduce(sums, group=self.context.host_group)  # float64 on the CPU: gloo, no device sync
        return validation_results(sums, self._validation_plans, section.sigma_bins)

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
                autocast_dtype=self.autocast_dtype,
            )

    def _collate_one(self, index: int) -> Any:
        return collate([self.source.load(index)], [index], self.context.device, self.adapter.collate_context)

