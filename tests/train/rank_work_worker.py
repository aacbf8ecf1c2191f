"""Two gloo ranks under torchrun: stop signals, rank-0-only work and split validation of the `Trainer`.

Usage (what `test_train_rank_work.py` runs):
    python -m torch.distributed.run --standalone --nproc_per_node 2 \
        tests/train/rank_work_worker.py OUT TOY_DIR

Writes ``OUT/report.rank<r>.json`` and runs under OUT:
- ``straight``: a DDP LoRA run (grad_accumulation 2) to 5 steps, saving every step;
- ``stopped``: the same run, SIGUSR1 sent to rank 1 only during micro-step 1 of step index 2 (the stop is
  agreed one micro-step later: mid step index 3), then resumed on both ranks to 5 steps;
- the validation of a DDP LoRA and an FSDP2 full trainer (3 held-out samples over 2 ranks) at step 0, and
  how many forwards each rank ran for it;
- rank 1's results of `ParallelContext.full_tensor` (a plain and a DTensor);
- a toy run with renders, sample prompts and CFG: how often each rank built the text encoder and the
  codec, the host group's backend and timeout, and which group the rank-0-work barriers used.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch
import torch.distributed as dist

STOP_AT = (2, 1)
"""(step, micro_step) during which rank 1 gets SIGUSR1."""


def tiny(out: Path, name: str, **overrides):
    from pusa_fw_wan.testing.train import tiny_config

    values = {"max_steps": 5, "optimizer.grad_accumulation": 2, "checkpoint.stop_signal": "SIGUSR1",
              "distributed": "ddp", **overrides}
    return tiny_config(out / name, **values)


def stop_and_resume(out: Path, report: dict) -> None:
    import pusa_fw_train.trainer_loop as loop
    from pusa_fw_train import Trainer

    Trainer(tiny(out, "straight", **{"checkpoint.every": 1})).run()
    draw = loop.draw_for_batch

    def drawing(*args, **kwargs):
        if (args[4], args[5]) == STOP_AT and dist.get_rank() == 1:
            os.kill(os.getpid(), signal.SIGUSR1)
        return draw(*args, **kwargs)

    loop.draw_for_batch = drawing
    try:
        result = Trainer(tiny(out, "stopped")).run()
    finally:
        loop.draw_for_batch = draw
    report["stopped_step"] = result.step
    report["stopped_checkpoint"] = None if result.checkpoint is None else result.checkpoint.name
    report["resumed_step"] = Trainer.resume(out / "stopped").run().step


def validations(out: Path, report: dict) -> None:
    import pusa_fw_train.validation as validation
    from pusa_fw_train import Trainer

    held = {"validation.every": 100, "validation.num_samples": 3, "data.options.count": 7}
    forward = validation.fafm_forward
    calls = [0]

    def counted(*args, **kwargs):
        calls[0] += 1
        return forward(*args, **kwargs)

    validation.fafm_forward = counted
    try:
        for name, overrides in {"ddp": {}, "fsdp": {"mode": "full", "distributed": "fsdp"}}.items():
            trainer = Trainer(tiny(out, f"validate-{name}", **held, **overrides))
            calls[0] = 0
            report[f"validation_{name}"] = trainer.validate()
            report[f"validation_forwards_{name}"] = calls[0]
            report["validation_rows"] = sum(len(plan.sigmas) for plan in trainer._validation_plans)
            del trainer
    finally:
        validation.fafm_forward = forward


def full_tensors(report: dict) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    from pusa_fw_train.parallel import parallel_context

    context = parallel_context("ddp", "lora", "cpu")
    mesh = init_device_mesh("cpu", (2,))
    whole = torch.arange(8.0)
    sharded = distribute_tensor(whole, mesh, [Shard(0)])
    plain, gathered = context.full_tensor(whole), context.full_tensor(sharded)
    report["full_tensor"] = [None if t is None else t.tolist() for t in (plain, gathered)]


def renders(out: Path, toy_dir: Path, report: dict) -> None:
    import pusa_fw_train.trainer as trainer_module
    from pusa_fw_toy.source import WorldSource
    from pusa_fw_train import Trainer
    from pusa_fw_train.config import validate_train_config

    built = {"text_encoder": 0, "codec": 0}
    get_adapter = trainer_module.get_train_adapter

    def counting_adapter(name):
        adapter = get_adapter(name)
        for method in built:
            real = getattr(adapter, method)

            def counted(*args, real=real, method=method, **kwargs):
                built[method] += 1
                return real(*args, **kwargs)

            setattr(adapter, method, counted)
        return adapter

    groups: list[str] = []
    new_groups: list[dict] = []
    real_new_group, real_barrier = dist.new_group, dist.barrier

    def recording_new_group(*args, **kwargs):
        timeout = kwargs.get("timeout")
        seconds = timeout and timeout.total_seconds()
        new_groups.append({"backend": kwargs.get("backend"), "timeout_s": seconds})
        return real_new_group(*args, **kwargs)

    def recording_barrier(*args, group=None, **kwargs):
        groups.append("default" if group is None else "host" if group is context_group[0] else "other")
        return real_barrier(*args, group=group, **kwargs)

    context_group: list[object] = [None]
    trainer_module.get_train_adapter, dist.new_group, dist.barrier = counting_adapter, recording_new_group, \
        recording_barrier
    try:
        values = {
            "output_dir": str(out / "renders"), "max_steps": 2, "seed": 5, "model": {"path": str(toy_dir)},
            "data": {"source": "unused", "batch_size": 2}, "lora": {"rank": 2, "alpha": 2.0},
            "logging": {"tensorboard": False}, "distributed": "ddp", "device": "cpu",
            "main_rank_timeout_s": 4321,
            "validation": {"every": 2, "num_samples": 1, "plans": ["t2v"], "render_tasks": ["t2v"],
                           "render_num_steps": 1, "render_prompts": ["a red ball"], "render_cfg_scale": 2.0},
        }
        source = WorldSource.from_model_dir(toy_dir, length=4)
        trainer = Trainer(validate_train_config(values), source=source)
        context_group[0] = trainer.context.host_group
        groups.clear()
        trainer.run()
        report["renders_setup_is_none"] = trainer._renders is None
        report["render_files"] = sorted(p.name for p in (out / "renders" / "renders").rglob("*.mp4"))
    finally:
        trainer_module.get_train_adapter = get_adapter
        dist.new_group, dist.barrier = real_new_group, real_barrier
    report["built"] = built
    report["new_groups"] = new_groups
    report["barrier_groups"] = sorted(set(groups))


def main(out: Path, toy_dir: Path) -> None:
    torch.set_num_threads(1)
    report: dict = {}
    stop_and_resume(out, report)
    validations(out, report)
    full_tensors(report)
    renders(out, toy_dir, report)
    (out / f"report.rank{dist.get_rank()}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
