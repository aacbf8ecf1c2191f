"""`Trainer` runs under torchrun: a DDP LoRA run and an FSDP2 full run of a tiny Wan, one launch.

Usage (what `test_train_trainer_distributed.py` runs):
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/wan/train_trainer_worker.py OUT

Each scenario trains 3 steps on global batches of 3 samples (split 2 + 1 over two ranks, so one rank gets
a zero-weight padding copy), with held frames and an EMA, and rank 0 writes its checkpoint under OUT.
`run_scenario(OUT, name, "none")` is the single-process reference on the same config. With a second
argument ``pause`` then ``resume``, the FSDP2 run stops after step 2 and a new launch resumes it. With
``elastic``, each scenario's run paused after step 2 by one process (suffix ``-elastic12``) is resumed on
two ranks, and a two-rank run (suffix ``-elastic21``) is paused after step 2 for one process to resume.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

SCENARIOS = {"ddp_lora": ("ddp", "lora"), "fsdp_full": ("fsdp", "full")}


def scenario_config(out: Path, name: str, strategy: str | None = None, suffix: str = ""):
    """The config of scenario `name` (with `strategy` instead of its own, e.g. "none")."""
    from pusa_fw_wan.testing.train import tiny_config

    own_strategy, mode = SCENARIOS[name]
    strategy = strategy or own_strategy
    overrides = {
        "distributed": strategy,
        "max_steps": 3,
        "data.batch_size": 3,
        "data.options.count": 5,
        "ema_decay": 0.9,
        "ptss.held_probability": 0.5,
    }
    return tiny_config(out / f"{name}-{strategy}{suffix}", mode=mode, **overrides)


def run_scenario(out: Path, name: str, strategy: str | None = None) -> Path | None:
    """Train scenario `name` to the end; the last checkpoint."""
    from pusa_fw_train import Trainer

    return Trainer(scenario_config(out, name, strategy)).run().checkpoint


def main(out: Path, phase: str) -> None:
    """Phase "all": every scenario straight; "pause" / "resume": fsdp_full stopped at step 2 / resumed."""
    from pusa_fw_train import Trainer

    torch.set_num_threads(1)
    if phase == "all":
        for name in SCENARIOS:
            run_scenario(out, name)
    elif phase == "pause":
        Trainer(scenario_config(out, "fsdp_full", suffix="-resumed")).run(stop_at=2)
    elif phase == "elastic":
        for name in SCENARIOS:
            Trainer.resume(scenario_config(out, name, suffix="-elastic12").output_dir).run()
            Trainer(scenario_config(out, name, suffix="-elastic21")).run(stop_at=2)
    else:
        Trainer.resume(out / "fsdp_full-fsdp-resumed").run()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "all")
