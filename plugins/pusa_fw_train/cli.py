"""``pusa-fw train``: FAFM fine-tuning from a TOML run file (or flags), and ``--resume RUN_DIR``.

Examples:
    ``pusa-fw train --config run.toml``
    ``pusa-fw train --config run.toml --max-steps 200 --set optimizer.lr=2e-5 --set ptss.p_async=0.5``
    ``pusa-fw train --resume runs/pusa-lora``                 (continue from checkpoints/latest)
    ``torchrun --nproc_per_node 2 -m pusa_fw.cli train --config run.toml``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pusa_fw.errors import InputError

__all__ = ["TrainCommand", "parse_set_option"]


def parse_set_option(text: str) -> tuple[str, Any]:
    """``"optimizer.lr=2e-5"`` -> ``("optimizer.lr", 2e-05)``; the value is read as TOML, else as a string."""
    import tomllib

    key, separator, raw = text.partition("=")
    if not separator or not key.strip():
        raise InputError(f"--set {text!r} must look like SECTION.KEY=VALUE, e.g. --set optimizer.lr=2e-5")
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


class TrainCommand:
    """``pusa-fw train --config RUN.toml [flags]`` or ``pusa-fw train --resume RUN_DIR``."""

    name = "train"
    help = "fine-tune a registered backbone with FAFM (LoRA or full) from a TOML run file; --resume continues a run"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Run file, resume directory, the common overrides and ``--set KEY=VALUE`` for any field."""
        parser.description = (
            "Train with Frame-Aware Flow Matching. The run file holds TrainConfig fields (see the README's "
            "Train section); flags override it. Checkpoints, config.json and log.jsonl go to output_dir."
        )
        parser.add_argument(
            "--config", type=Path, metavar="RUN.toml", help="TOML run file with TrainConfig fields"
        )
        parser.add_argument(
            "--resume",
            type=Path,
            metavar="RUN_DIR",
            help="continue the run in RUN_DIR (or a step-XXXXXXX checkpoint) from its newest checkpoint",
        )
        parser.add_argument("--output-dir", metavar="DIR", help="run directory (overrides output_dir)")
        parser.add_argument(
            "--max-steps", type=int, metavar="N", help="optimizer steps of the run (overrides max_steps)"
        )
        parser.add_argument(
            "--weights-dtype",
            choices=("auto", "float32", "bfloat16", "float16", "float8_e4m3fn", "float8_e5m2"),
            help="storage dtype of the frozen base (overrides weights_dtype; auto: bf16 for a bf16 LoRA)",
        )
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            dest="set_values",
            help="set any config field, dotted (e.g. optimizer.lr=2e-5, ptss.p_async=0.5); repeatable",
        )
        parser.add_argument(
            "--progress",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="show a progress bar (default: when stderr is a terminal)",
        )

    def run(self, args: argparse.Namespace) -> int:
        """Train; print the last checkpoint directory on stdout."""
        from pusa_fw_train.config import load_train_config
        from pusa_fw_train.trainer import Trainer

        overrides = dict(parse_set_option(item) for item in args.set_values)
        if args.output_dir is not None:
            overrides["output_dir"] = str(Path(args.output_dir).expanduser().resolve())
        if args.max_steps is not None:
            overrides["max_steps"] = args.max_steps
        if args.weights_dtype is not None:
            overrides["weights_dtype"] = args.weights_dtype
        if args.resume is not None:
            if args.output_dir is not None:
                raise InputError(
                    f"--output-dir cannot be combined with --resume: the run continues in {str(args.resume)!r}; "
                    "move or copy the run directory instead"
                )
            config_file = args.config
            if config_file is None:
                run_dir = (
                    args.resume if (args.resume / "config.json").is_file() else args.resume.parent.parent
                )
                config_file = run_dir / "config.json"
            config = load_train_config(config_file, overrides) if (args.config or overrides) else None
            trainer = Trainer.resume(args.resume, config)
        elif args.config is not None:
            trainer = Trainer(load_train_config(args.config, overrides))
        else:
            raise InputError("give --config RUN.toml to start a run or --resume RUN_DIR to continue one")
        show = sys.stderr.isatty() if args.progress is None else args.progress
        result = self._run(trainer, show)
        sys.stdout.write(f"{result.checkpoint}\n" if result.checkpoint is not None else "")
        return 0

    @staticmethod
    def _run(trainer: Any, show: bool) -> Any:
        if not show or not trainer.context.is_main:
            return trainer.run()
        from tqdm import tqdm

        with tqdm(total=trainer.config.max_steps, initial=trainer.step, desc="train", unit="step") as bar:

            def progress(record: dict[str, Any]) -> None:
                bar.update(record["step"] - bar.n)
                if "loss" in record:
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")

            return trainer.run(progress=progress)
