"""The training loop of `Trainer` (`TrainingLoop`): optimizer steps, gradient accumulation, clipping, and
what is due after a step (validation, renders, progress, checkpoints, LoRA exports).

One optimizer step takes ``optimizer.grad_accumulation`` global batches from the data order; each is split
over the ranks, drawn, noised and pushed through the wrapped model by `step.frame_loss_terms`. The mixin
reads the run state `Trainer.__init__` sets up (``config``, ``context``, ``wrapped``, ``optimizer``, ...).

A stop signal (``checkpoint.stop_signal``, `signals.StopRequest`) is polled before every micro-step. When
the ranks agree on a stop in the middle of a step, the unfinished step is dropped: its gradients are
zeroed, and the data position and the RNG states go back to the step's start, so the checkpoint saved
then is exactly that of the last finished step and a resumed run replays the dropped step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from pusa_fw.fafm import masked_frame_mean

from .build import learning_rate
from .loader import BatchLoader
from .metrics import device_synchronize, sigma_bin_losses
from .mixing import apply_caption_dropout
from .signals import StopRequest
from .state_io import rng_state, set_rng_state
from .step import collate, draw_for_batch, frame_loss_terms
from .wrapping import gradient_sync

__all__ = ["ProgressCallback", "TrainResult", "TrainingLoop", "ValidationHook"]

ProgressCallback = Callable[[dict[str, Any]], None]
ValidationHook = Callable[[Any, dict[str, Any]], None]
"""``on_validation(trainer, metrics)``."""


@dataclass
class TrainResult:
    """What `Trainer.run` did: the last step, the last logged metrics and the last checkpoint (or None)."""

    step: int
    metrics: dict[str, Any]
    checkpoint: Path | None


class TrainingLoop:
    """`Trainer.run` and the steps it takes (a mixin of `Trainer`; see the module docstring)."""

    config: Any
    context: Any
    log: Any

    def run(
        self,
        *,
        stop_at: int | None = None,
        progress: ProgressCallback | None = None,
        on_validation: ValidationHook | None = None,
    ) -> TrainResult:
        """Train up to ``config.max_steps`` (or `stop_at`, then save a checkpoint to resume from).

        Args:
            stop_at: stop after this many optimizer steps in total (for pausing a run).
            progress: called after every optimizer step with ``{"step", "loss", "lr", ...}``.
            on_validation: called as ``on_validation(trainer, metrics)`` after each validation (every
                ``validation.every`` steps), e.g. to render a short clip from any task's plan with
                ``trainer.model`` (put it in ``eval()`` mode for that, and back in ``train()`` after).
        """
        config = self.config
        target = min(config.max_steps, stop_at) if stop_at is not None else config.max_steps
        metrics: dict[str, Any] = {}
        last_checkpoint = None
        loader = BatchLoader(
            self.order, self.position, self.context.split, self.source.load, config.data.prefetch
        )
        try:
            with StopRequest(self.context, config.checkpoint.stop_signal) as stop:
                while self.step < target:
                    stepped = self._optimizer_step(loader, target, metrics, stop)
                    if stepped is None:  # every rank agreed on a stop at the same micro-step
                        if self._saved_step != self.step:
                            last_checkpoint = self.save() or last_checkpoint
                        break
                    metrics = stepped
                    saved = self._after_step(target, metrics, progress, on_validation)
                    last_checkpoint = saved or last_checkpoint
        finally:
            loader.close()
        if self.log is not None:
            self.log.close()
        return TrainResult(self.step, metrics, last_checkpoint)

    def _optimizer_step(
        self, loader: BatchLoader, target: int, metrics: dict[str, Any], stop: StopRequest
    ) -> dict[str, Any] | None:
        """One optimizer step; returns the step's logged metrics (or the last ones when it logs none).

        Returns None, with the run as it was at the step's start, when a stop was agreed before one of
        its micro-steps.
        """
        config = self.config
        logs = (self.step + 1) % config.logging.every == 0 or self.step + 1 == target
        if logs:
            device_synchronize(self.context.device)  # the step's time starts with an idle device
        started = time.perf_counter()
        start_position, start_rng = replace(self.position), rng_state(self.context.rank)
        accumulated = self._accumulate(loader, stop)
        if accumulated is None:  # drop the unfinished step; the checkpoint is the last finished one
            self.optimizer.zero_grad(set_to_none=True)
            self.position = start_position
            set_rng_state(start_rng, self.context.rank)
            return None
        loss_sum, tokens, last = accumulated
        lr = learning_rate(config.optimizer, self.step, config.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        grad_norm = self._clip()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.tensors)
        self.step += 1
        if logs:
            device_synchronize(self.context.device)
            elapsed = time.perf_counter() - started
            metrics = {
                "step": self.step,
                "loss": self.context.mean_over_ranks(loss_sum),
                "lr": lr,
                "grad_norm": float(grad_norm),
                "step_time_s": elapsed,
                "tokens_per_s": tokens / max(elapsed, 1e-9),
                "epoch": self.position.epoch,
            }
            metrics.update(sigma_bin_losses(*last, bins=config.validation.sigma_bins))
            self._write(metrics)
        return metrics

    def _after_step(
        self,
        target: int,
        metrics: dict[str, Any],
        progress: ProgressCallback | None,
        on_validation: ValidationHook | None,
    ) -> Path | None:
        """Validation, renders, progress and checkpoints due after an optimizer step."""
        config = self.config
        last_checkpoint = None
        if config.validation.every and self.step % config.validation.every == 0:
            validation = {"step": self.step, **self.validate()}
            self._write(validation)
            if on_validation is not None:
                on_validation(self, validation)
        interval = config.validation.render_interval
        if interval and self.step % interval == 0:
            with self.context.main_rank_work() as is_main:
                if is_main:
                    self.render()
        if progress is not None:
            progress({"step": self.step, "target": target, **metrics})
        if (config.checkpoint.every and self.step % config.checkpoint.every == 0) or self.step == target:
            last_checkpoint = self.save()
        every = config.checkpoint.export_lora_every
        if every and self.step % every == 0:
            last_checkpoint = last_checkpoint if self._saved_step == self.step else self.save()
            with self.context.main_rank_work() as is_main:
                if is_main and last_checkpoint is not None:
                    self.export_lora(last_checkpoint)
        return last_checkpoint

    def _accumulate(
        self, loader: BatchLoader, stop: StopRequest
    ) -> tuple[torch.Tensor, int, tuple[torch.Tensor, ...]] | None:
        """Forward and backward every micro-batch of one optimizer step; returns the summed loss.

        Returns None as soon as `stop` says so (polled before every micro-step, on every rank).
        """
        config = self.config
        accumulation = config.optimizer.grad_accumulation
        loss_sum = torch.zeros((), device=self.context.device)
        tokens = 0
        last: tuple[torch.Tensor, ...] = ()
        for micro_step in range(accumulation):
            if stop.poll():
                return None
            loaded = loader.next()
            self.position = loaded.position
            indices, weight_fn, samples = loaded.indices, loaded.loss_fn, loaded.samples
            if self.empty_context is not None:
                samples = apply_caption_dropout(
                    samples,
                    indices,
                    self.empty_context,
                    seed=config.seed,
                    step=self.step,
                    micro_step=micro_step,
                    probability=config.data.caption_dropout,
                )
            batch = collate(samples, indices, self.context.device, self.adapter.collate_context)
            draws = draw_for_batch(
                config.ptss,
                batch.latents.shape,
                indices,
                config.seed,
                self.step,
                micro_step,
                self.context.device,
            )
            with gradient_sync(self.wrapped, micro_step == accumulation - 1):
                terms, losses = frame_loss_terms(
                    self.wrapped, batch, draws, weighting=self.weighting, autocast_dtype=self.autocast_dtype
                )
                loss = (
                    weight_fn(terms, draws.loss_mask)
                    if weight_fn
                    else masked_frame_mean(terms, None, draws.loss_mask)
                )
                (loss / accumulation).backward()
            loss_sum = loss_sum + loss.detach() / accumulation  # stays on the device: no host sync
            per_sample = self.adapter.tokens_per_sample(batch.latents.shape[1:])
            tokens += per_sample * len(indices) * self.context.world_size
            last = (draws.sigmas, losses, draws.loss_mask)
        return loss_sum, tokens, last

    def _clip(self) -> torch.Tensor:
        parameters = list(self.tensors.values())
        max_norm = self.config.optimizer.max_grad_norm
        if max_norm is None:
            grads = [p.grad for p in parameters if p.grad is not None]
            return (
                torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
                if grads
                else torch.zeros(())
            )
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)

    def _write(self, record: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.write(record)

