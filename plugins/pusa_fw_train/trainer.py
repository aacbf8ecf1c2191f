"""`Trainer`: FAFM fine-tuning of any registered backbone (LoRA or full) from one `TrainConfig`, exact resume.

    trainer = Trainer(config)              # a new run in config.output_dir
    trainer.run()                          # to config.max_steps, checkpoints and log.jsonl on the way
    trainer = Trainer.resume("runs/x")     # continue from runs/x/checkpoints/latest

The backbone (``model.backbone``) is reached only through its registered `TrainAdapter`. One optimizer step
takes ``optimizer.grad_accumulation`` global batches from the data order; each is split over the ranks
(`pusa_fw_train.parallel.ParallelContext`, when several processes run), drawn, noised and pushed through
the wrapped model by `step.frame_loss_terms` (the core's `pusa_fw.fafm.fafm_forward`). A stopped and
resumed run ends bit-identical
to an uninterrupted one on the CPU: weights, AdamW moments, the data position and the torch RNG states are
restored, and the sigma/noise draws are keyed by (seed, step, sample).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from pusa_fw.errors import InputError
from pusa_fw.fafm import masked_frame_mean
from pusa_fw.io.atomic import atomic_write_bytes
from pusa_fw.training_data import TrainingSource

from .adapter import get_train_adapter
from .block_swap import BlockSwap
from .build import build_model, build_optimizer, learning_rate
from .checkpoint import CheckpointFiles, begin_checkpoint, read_checkpoint, write_checkpoint
from .config import TrainConfig
from .loader import BatchLoader
from .memory import fsdp_mixed_precision, resolve_device
from .sharded import SHARDED_DIR, safetensors_view, save_sharded
from .signals import StopRequest
from .metrics import MetricsLog, device_synchronize, sigma_bin_losses
from .order import DataOrder, OrderPosition
from .parallel import parallel_context
from .renders import RenderSetup, build_render_tasks, render_tasks, swapped_weights
from .mixing import apply_caption_dropout, load_empty_context
from .sources import open_data
from .state import apply_state, check_resume_config, collect_state, find_checkpoint, truncate_log
from .state_io import EMA
from .step import collate, draw_for_batch, frame_loss_terms, frame_weighting
from .validation import plan_sigma_vectors, validation_losses
from .wrapping import gradient_sync, wrap_model

__all__ = ["TrainResult", "Trainer"]

ProgressCallback = Callable[[dict[str, Any]], None]
ValidationHook = Callable[["Trainer", dict[str, Any]], None]


@dataclass
class TrainResult:
    """What `Trainer.run` did: the last step, the last logged metrics and the last checkpoint (or None)."""

    step: int
    metrics: dict[str, Any]
    checkpoint: Path | None


class Trainer:
    """A training run (see the module docstring).

    Args:
        config: the validated run config.
        source: the data; default: opened from ``config.data``.
        resume_from: a checkpoint directory to restore (use `Trainer.resume`).
    """

    def __init__(
        self, config: TrainConfig, *, source: TrainingSource | None = None, resume_from: Path | None = None
    ) -> None:
        self.config = config
        self.run_dir = Path(config.output_dir).expanduser()
        timeout = timedelta(seconds=config.collective_timeout_s)
        device = resolve_device(config.device)
        self.context = parallel_context(config.distributed, config.mode, device, timeout)
        self.source = source if source is not None else open_data(config.data)
        dropout = config.data.caption_dropout
        self.empty_context = load_empty_context(config.data.empty_context, self.source) if dropout else None
        held_out = self._held_out_indices()
        self.order = DataOrder(self.source, config.data.batch_size, config.seed, exclude=frozenset(held_out))
        self.position = OrderPosition()
        self.step = 0
        self._saved_step = -1
        self.adapter = get_train_adapter(config.model.backbone)
        self.model, self.targets = build_model(config, self.adapter, self.context.device)
        swap = config.block_swap
        self.block_swap = BlockSwap(self.model, swap, self.context.device) if swap else None
        self.wrapped = wrap_model(
            self.model, self.context, shard=self.adapter.shard, **fsdp_mixed_precision(config, self.context)
        )
        self.optimizer, self.names = build_optimizer(self.model, config.optimizer)
        self.tensors = dict(
            zip(self.names, (group for group in self.optimizer.param_groups[0]["params"]), strict=True)
        )
        self.ema = EMA(self.tensors, config.ema_decay) if config.ema_decay is not None else None
        self.weighting = frame_weighting(config.loss.frame_weighting, config.ptss)
        self.autocast_dtype = torch.bfloat16 if config.precision == "bf16" else None
        self._validation_indices = held_out
        self._validation_plans: list[Any] | None = None
        self._renders = self._render_setup()
        if resume_from is not None:
            self.load_state_dict(read_checkpoint(resume_from))
            if self.context.is_main:
                truncate_log(self.run_dir / "log.jsonl", self.step)
        else:
            torch.manual_seed(config.seed + 1_000_003 * (self.context.rank + 1))  # this rank's own stream
            self._start_run_dir()
        self.log = (
            MetricsLog(self.run_dir, tensorboard=config.logging.tensorboard) if self.context.is_main else None
        )

    # ------------------------------------------------------------------ setup

    @classmethod
    def resume(
        cls, run_dir: str | Path, config: TrainConfig | None = None, *, source: TrainingSource | None = None
    ) -> Trainer:
        """Continue the run in `run_dir` (or a ``step-XXXXXXX`` directory) from its newest checkpoint.

        Args:
            run_dir: the run directory, or one checkpoint directory inside it.
            config: a config to resume with; it may change only ``max_steps``, ``checkpoint`` and
                ``logging``. Default: the run's saved config.

        Raises:
            CheckpointError: no finished checkpoint, an incomplete one, or a config that differs (the
                message lists every difference).
        """
        directory = find_checkpoint(Path(run_dir).expanduser())
        config = check_resume_config(directory, config)
        return cls(config, source=source, resume_from=directory)

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

    def _start_run_dir(self) -> None:
        if (self.run_dir / "checkpoints" / "latest").exists():
            raise InputError(
                f"{str(self.run_dir)!r} already holds a run; resume it (pusa-fw train --resume "
                f"{self.run_dir}) or choose another output_dir"
            )
        if self.context.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.run_dir / "config.json", self.config.model_dump_json(indent=2).encode())

    # ------------------------------------------------------------------ loop

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
            with StopRequest(self.context, config.checkpoint.save_on_sigterm) as stop:
                while self.step < target:
                    metrics = self._optimizer_step(loader, target, metrics)
                    saved = self._after_step(target, metrics, progress, on_validation)
                    if stop.requested():  # every rank learns it after the same step
                        saved = saved if self._saved_step == self.step else self.save()
                        target = self.step
                    last_checkpoint = saved or last_checkpoint
        finally:
            loader.close()
        if self.log is not None:
            self.log.close()
        return TrainResult(self.step, metrics, last_checkpoint)

    def _optimizer_step(self, loader: BatchLoader, target: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """One optimizer step; returns the step's logged metrics (or the last ones when it logs none)."""
        config = self.config
        logs = (self.step + 1) % config.logging.every == 0 or self.step + 1 == target
        if logs:
            device_synchronize(self.context.device)  # the step's time starts with an idle device
        started = time.perf_counter()
        lr = learning_rate(config.optimizer, self.step, config.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum, tokens, last = self._accumulate(loader)
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

    def _accumulate(self, loader: BatchLoader) -> tuple[torch.Tensor, int, tuple[torch.Tensor, ...]]:
        """Forward and backward every micro-batch of one optimizer step; returns the summed loss."""
        config = self.config
        accumulation = config.optimizer.grad_accumulation
        loss_sum = torch.zeros((), device=self.context.device)
        tokens = 0
        last: tuple[torch.Tensor, ...] = ()
        for micro_step in range(accumulation):
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

    # ------------------------------------------------------------------ checkpoints

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
