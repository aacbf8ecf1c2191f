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

from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from pusa_fw.errors import InputError
from pusa_fw.io.atomic import atomic_write_bytes
from pusa_fw.training_data import TrainingSource

from .activation_offload import ActivationOffload
from .adapter import get_train_adapter
from .block_swap import BlockSwap
from .build import build_model, build_optimizer
from .checkpoint import read_checkpoint
from .config import TrainConfig
from .memory import fsdp_mixed_precision, resolve_device
from .metrics import MetricsLog
from .mixing import load_empty_context
from .order import DataOrder, OrderPosition
from .parallel import parallel_context
from .sharded_build import build_sharded_model, can_build_sharded
from .sources import open_data
from .state import check_resume_config, find_checkpoint, truncate_log
from .state_io import EMA
from .step import frame_weighting
from .trainer_checkpoints import TrainerCheckpoints, check_checkpoint_format
from .trainer_eval import TrainerEvaluation
from .trainer_loop import TrainingLoop, TrainResult
from .wrapping import wrap_model

__all__ = ["TrainResult", "Trainer"]


class Trainer(TrainingLoop, TrainerEvaluation, TrainerCheckpoints):
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
        host_timeout = timedelta(seconds=config.main_rank_timeout_s)
        device = resolve_device(config.device)
        self.context = parallel_context(config.distributed, config.mode, device, timeout, host_timeout)
        check_checkpoint_format(
            config.checkpoint.format, config.mode, self.context.strategy, self.context.world_size
        )
        self.source = source if source is not None else open_data(config.data)
        dropout = config.data.caption_dropout
        self.empty_context = load_empty_context(config.data.empty_context, self.source) if dropout else None
        held_out = self._held_out_indices()
        self.order = DataOrder(self.source, config.data.batch_size, config.seed, exclude=frozenset(held_out))
        self.position = OrderPosition()
        self.step = 0
        self._saved_step = -1
        self.adapter = get_train_adapter(config.model.backbone)
        _check_latents(self.source, self.adapter, config.model.path)
        precision = fsdp_mixed_precision(config, self.context)
        self.load_report = None  # what a shard-only build read and kept on this rank (adapter-defined)
        self.block_swap = None
        self.activation_offload = None
        if can_build_sharded(config, self.adapter, self.context):  # FSDP2: this rank's shards only
            self.model, self.targets, self.load_report = build_sharded_model(
                config, self.adapter, self.context, **precision
            )
            self.wrapped = self.model
        else:
            self.model, self.targets = build_model(config, self.adapter, self.context.device)
            swap = config.block_swap
            self.block_swap = BlockSwap(self.model, swap, self.context.device) if swap else None
            if config.activation_offload:  # the checkpointed block inputs wait in host memory
                self.activation_offload = ActivationOffload(self.model, self.context.device)
            self.wrapped = wrap_model(self.model, self.context, shard=self.adapter.shard, **precision)
        self.optimizer, self.names = build_optimizer(self.model, config.optimizer)
        self.tensors = dict(
            zip(self.names, (group for group in self.optimizer.param_groups[0]["params"]), strict=True)
        )
        self.ema = EMA(self.tensors, config.ema_decay) if config.ema_decay is not None else None
        self.weighting = frame_weighting(config.loss.frame_weighting, config.ptss)
        self.autocast_dtype = torch.bfloat16 if config.precision == "bf16" else None
        self._validation_indices = held_out
        self._validation_plans: list[object] | None = None
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

    def _start_run_dir(self) -> None:
        if (self.run_dir / "checkpoints" / "latest").exists():
            raise InputError(
                f"{str(self.run_dir)!r} already holds a run; resume it (pusa-fw train --resume "
                f"{self.run_dir}) or choose another output_dir"
            )
        if self.context.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.run_dir / "config.json", self.config.model_dump_json(indent=2).encode())


def _check_latents(source: TrainingSource, adapter: Any, model_path: str | None) -> None:
    """Let an adapter that can (optional ``check_latents(latents_shape, model_path)``) refuse data its model
    cannot take, e.g. a Wan2.1 cache (16 channels) for Wan2.2 TI2V-5B (48), before any weights are read."""
    check = getattr(adapter, "check_latents", None)
    if check is not None and len(source) > 0:
        check(tuple(source.load(0).latents.shape), model_path)
