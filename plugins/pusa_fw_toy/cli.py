"""CLI commands of the toy plugin: ``pusa-fw toy-init`` and ``pusa-fw eval-toy``.

Examples:
    ``pusa-fw toy-init runs/toy-init --dim 192 --layers 4`` writes a fresh toy model directory (the start
    of the base training; ``--walls bounce --num-frames 17`` records a world whose square bounces off the
    edges at 1 px/frame in its ``toy.json``, which training and eval then render); ``pusa-fw eval-toy
    --base runs/base/model --lora vta-s0.safetensors --lora vta-s1.safetensors --seeds 128 --out eval/``
    writes ``eval_toy.json``, ``.md`` and ``.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pusa_fw.errors import FrameMapError, InputError

__all__ = ["BOUNCE_SPEED", "EvalToyCommand", "ToyInitCommand", "ToyPackCommand"]

BOUNCE_SPEED = 1.0
"""Pixels per frame of a ``--walls bounce`` world, whatever the clip length (a wall-less world instead
crosses 8 px over the clip, so its speed shrinks as clips grow)."""


class ToyInitCommand:
    """``pusa-fw toy-init DIR``: write a toy model directory with fresh weights."""

    name = "toy-init"
    help = "write a toy model directory (WanDiT + pixel-unshuffle codec + word-level text encoder)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("directory", type=Path, help="directory to write (its parent must exist)")
        parser.add_argument("--dim", type=int, default=192, help="DiT width (default: 192)")
        parser.add_argument("--heads", type=int, default=2, help="attention heads (default: 2)")
        parser.add_argument("--layers", type=int, default=4, help="DiT blocks (default: 4)")
        parser.add_argument("--seed", type=int, default=0, help="seed of the weights (default: 0)")
        parser.add_argument("--init", choices=("default", "wan"), default="default",
                            help="start for training: PyTorch's layer defaults, or Wan2.1's law with a zero "
                                 "output head (default: default)")
        parser.add_argument("--patch", type=int, default=2,
                            help="latent cells per DiT token side: 2 makes 4x4-pixel tokens, 1 makes 2x2 "
                                 "(default: 2)")
        parser.add_argument("--temporal-stride", type=int, default=1,
                            help="pixel frames per latent frame (1, or 4 with --wan-layout)")
        parser.add_argument("--wan-layout", action="store_true",
                            help="Wan's frame layout: frame 0 alone, then groups of --temporal-stride")
        parser.add_argument("--num-frames", type=int, default=None,
                            help="frames per world clip (default: 9, or 4 * 4 + 1 with --wan-layout)")
        parser.add_argument("--walls", choices=("none", "bounce"), default="none",
                            help="the world's walls: 'none' (the square crosses 8 px over the clip and never "
                                 "reaches an edge) or 'bounce' (it moves 1 px per frame and folds back off "
                                 "the edges, so clips of any length stay inside; default: none)")
        parser.add_argument("--position-ramps", action="store_true",
                            help="two more latent channels that hold each cell's x and y, so that the DiT "
                                 "(positions through RoPE only, which is relative) can tell where the walls are")
        parser.add_argument("--random", action="store_true",
                            help="random non-zero values everywhere (tests) instead of the default init")

    def run(self, args: argparse.Namespace) -> int:
        from pydantic import ValidationError

        from pusa_fw_toy.codec import ToyCodecConfig
        from pusa_fw_toy.model_dir import ToyModelSpec, build_toy_dir
        from pusa_fw_toy.world import WorldConfig

        frames = args.num_frames if args.num_frames is not None else (
            4 * args.temporal_stride + 1 if args.wan_layout else 9)
        if frames < 2:
            raise InputError(
                f"toy-init: --num-frames {frames} is too few; a world clip needs at least 2 frames"
            )
        try:
            codec = ToyCodecConfig(temporal_stride=args.temporal_stride, first_frame_alone=args.wan_layout,
                                   patch_size=args.patch, position_ramps=args.position_ramps)
            speed = BOUNCE_SPEED if args.walls == "bounce" else 8.0 / (frames - 1)
            world = WorldConfig(num_frames=frames, speed=speed, walls=args.walls)
        except ValidationError as error:
            raise InputError(f"toy-init: {error.errors()[0]['msg']}") from error
        if args.random and args.init != "default":
            raise InputError(f"toy-init: --random replaces the init; drop --init {args.init} or --random")
        codec.geometry().num_latent_frames(frames)
        try:
            codec.geometry().check_spatial_size(world.size, world.size)
        except FrameMapError as error:
            raise InputError(f"toy-init: --patch {args.patch} does not tile the {world.size}-pixel world "
                             f"({error}); use --patch 1 or 2") from None
        spec = ToyModelSpec(codec=codec, world=world)
        root = build_toy_dir(args.directory, spec=spec, seed=args.seed, randomise=args.random, init=args.init,
                             dim=args.dim,
                             num_heads=args.heads, num_layers=args.layers)
        sys.stdout.write(f"{root}\n")
        return 0


class ToyPackCommand:
    """``pusa-fw toy-pack CHECKPOINT --out DIR``: a full-training checkpoint as a toy model directory."""

    name = "toy-pack"
    help = "turn a toy base-training checkpoint (or run directory) into a toy model directory"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("checkpoint", type=Path, help="checkpoint directory, or a run directory (latest)")
        parser.add_argument("--out", type=Path, required=True, help="toy model directory to write")
        parser.add_argument("--init", type=Path, default=None,
                            help="the toy directory the run started from (default: the run's model.path)")
        parser.add_argument("--ema", action="store_true", help="use the EMA weights (ema.safetensors)")
        parser.add_argument("--walls", choices=("none", "bounce"), default=None,
                            help="write the model into this world instead of the run's (a curriculum stage: "
                                 "trained without walls, trained on with them next)")
        parser.add_argument("--position-ramps", action="store_true",
                            help="give the codec its two position channels (each cell's x and y) and widen the "
                                 "DiT with zero weights for them; the model's videos are unchanged until trained on")
        parser.add_argument("--add-blocks", type=int, default=0,
                            help="append this many DiT blocks that start as the identity (zero residual outputs); "
                                 "the model's videos are unchanged until trained on (default: 0)")

    def run(self, args: argparse.Namespace) -> int:
        from pusa_fw_toy.pack import pack_checkpoint

        root = pack_checkpoint(args.checkpoint, args.out, init_dir=args.init, ema=args.ema, walls=args.walls,
                               position_ramps=args.position_ramps, add_blocks=args.add_blocks)
        sys.stdout.write(f"{root}\n")
        return 0


class EvalToyCommand:
    """``pusa-fw eval-toy``: base + replacement vs base at sigma 0 vs VTA, with calibration rows."""

    name = "eval-toy"
    help = "measure conditioning (replacement vs Pusa's) in the toy world: table (JSON, markdown) and plot"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--base", type=Path, required=True, help="toy model directory of the base model")
        parser.add_argument("--lora", type=Path, action="append", default=[], dest="loras",
                            help="VTA LoRA file (repeat once per training seed)")
        parser.add_argument("--seeds", type=int, default=None,
                            help="held-out seeds per task (default: 128; 64 with --long)")
        parser.add_argument("--task", action="append", dest="tasks", default=None,
                            help="task to run (repeatable; default: i2v, start-end, extension, t2v; with --long: "
                                 "rolling, extension, loop)")
        parser.add_argument("--long", action="store_true",
                            help="long videos in the bounce world: compare the long-video schedules rolling from "
                                 "one image, then run the best on every long task and length; writes "
                                 "long_video.{json,md,png} (one --lora: the VTA)")
        parser.add_argument("--long-schedule", action="append", dest="long_schedules", default=None,
                            help="with --long: a schedule to compare (repeatable; default: all)")
        parser.add_argument("--frames", action="append", type=int, dest="lengths", default=None,
                            help="with --long: video length (repeatable; default: 65 and 129; the first is the "
                                 "length the schedules are compared at)")
        parser.add_argument("--steps", type=int, default=20, help="sampling steps (default: 20)")
        parser.add_argument("--shift", type=float, default=2.0, help="sigma shift (default: 2)")
        parser.add_argument("--cfg", type=float, default=1.0, help="text guidance scale (default: 1, off)")
        parser.add_argument("--sampler", default="euler",
                            help="registered sampler (euler, unipc, lcm, ...; default: euler)")
        parser.add_argument("--cache", default="none",
                            help="step cache every model row samples with (none, teacache, framecache, ...)")
        parser.add_argument("--cache-params", default="{}", metavar="JSON",
                            help="the cache's parameters as a JSON object, e.g. '{\"threshold\": 0.2}'")
        parser.add_argument("--batch-size", type=int, default=None,
                            help="videos per forward (default: 32; 64 with --long)")
        parser.add_argument("--out", type=Path, required=True, help="directory for eval_toy.{json,md,png}")
        parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                            help="tqdm bar on stderr (default: when stderr is a terminal)")

    def run(self, args: argparse.Namespace) -> int:
        from tqdm.auto import tqdm

        from pusa_fw_toy.evaluate import EvalConfig, evaluate
        from pusa_fw_toy.report import markdown_table, write_report

        if not args.base.expanduser().is_dir():
            raise InputError(f"--base {str(args.base)!r} is not a directory; pass a toy model directory")
        show = sys.stderr.isatty() if args.progress is None else args.progress
        if args.long:
            return _run_long(args, show)
        if args.long_schedules or args.lengths:
            raise InputError("--long-schedule and --frames go with --long; add --long or drop them")
        values = {"base": args.base, "loras": args.loras, "steps": args.steps,
                  "num_seeds": 128 if args.seeds is None else args.seeds,
                  "shift": args.shift, "cfg": args.cfg, "sampler": args.sampler,
                  "batch_size": 32 if args.batch_size is None else args.batch_size,
                  "cache": args.cache, "cache_params": _json_object(args.cache_params, "--cache-params")}
        if args.tasks:
            values["tasks"] = args.tasks
        config = EvalConfig(**values)
        with tqdm(desc="eval-toy", unit="batch", disable=not show, leave=False) as bar:
            report = evaluate(config, progress=lambda label: (bar.set_postfix_str(label), bar.update(1)))
        paths = write_report(report, args.out)
        sys.stdout.write(markdown_table(report))
        sys.stdout.write("".join(f"{path}\n" for path in paths.values()))
        return 0


def _run_long(args: argparse.Namespace, show: bool) -> int:
    """``eval-toy --long``: the long-video report (`pusa_fw_toy.long_eval`)."""
    from tqdm.auto import tqdm

    from pusa_fw_toy.long_eval import LongEvalConfig, evaluate_long
    from pusa_fw_toy.long_report import long_markdown, write_long_report

    if len(args.loras) != 1:
        raise InputError(f"--long takes exactly one --lora (the VTA), got {len(args.loras)}; pass the one to measure")
    if args.cfg != 1.0 or args.sampler != "euler" or args.cache != "none":
        raise InputError("--long samples with euler, no cache and cfg 1, as the gates were set; drop --cfg, "
                         "--sampler and --cache")
    values = {"base": args.base, "lora": args.loras[0], "num_seeds": 64 if args.seeds is None else args.seeds,
              "steps": args.steps, "shift": args.shift, "batch_size": 64 if args.batch_size is None else args.batch_size}
    for key, value in (("schedules", args.long_schedules), ("lengths", args.lengths), ("tasks", args.tasks)):
        if value:
            values[key] = value
    config = LongEvalConfig(**values)
    with tqdm(desc="eval-toy --long", unit="batch", disable=not show, leave=False) as bar:
        report = evaluate_long(config, progress=lambda label: (bar.set_postfix_str(label), bar.update(1)))
    paths = write_long_report(report, args.out)
    sys.stdout.write(long_markdown(report))
    sys.stdout.write("".join(f"{path}\n" for path in paths.values()))
    return 0


def _json_object(text: str, flag: str) -> dict:
    """`text` parsed as a JSON object, or a one-line `InputError` naming `flag`."""
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{flag} {text!r} is not JSON ({error.msg}); give an object such as '{{}}'") from None
    if not isinstance(value, dict):
        raise InputError(f"{flag} {text!r} is not a JSON object; give an object such as '{{\"threshold\": 0.2}}'")
    return value
