"""``pusa-fw prepare``: encode a captioned folder of videos and images into a latent cache for training.

Example:
    ``pusa-fw prepare clips/ --out cache/ --model Wan2.1-T2V-14B --num-frames 81 --extraction chunk``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["PrepareCommand"]


class PrepareCommand:
    """``pusa-fw prepare DATA --out CACHE --model DIR``: latents + text embeddings, one file per clip."""

    name = "prepare"
    help = "encode a folder of captioned videos/images (metadata.csv or .jsonl) into a latent cache"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Dataset, output, model files, buckets, frame extraction and devices."""
        from pusa_fw_wan.train.prepare.config import EXTRACTION_MODES, PrepareConfig

        fields = PrepareConfig.model_fields
        parser.description = (
            "Encode DATA (metadata.csv with file_name,text or metadata.jsonl, media beside it or in "
            "train/) into "
            "--out: one .safetensors per clip (latents + caption embedding) and index.json. Re-running skips "
            "items already prepared and re-encodes changed ones; bad items are listed, never fatal."
        )
        parser.add_argument("data", type=Path, metavar="DATA", help="dataset folder")
        parser.add_argument(
            "--out", type=Path, required=True, metavar="CACHE", help=fields["out"].description
        )
        parser.add_argument(
            "--model", type=Path, metavar="DIR", help="Wan2.1 model directory (VAE + umT5 inside)"
        )
        parser.add_argument(
            "--vae", type=Path, metavar="FILE", help="VAE file (default: the model directory's)"
        )
        parser.add_argument(
            "--text-encoder", type=Path, metavar="FILE", help="umT5 file (default: the model's)"
        )
        parser.add_argument("--tokenizer", type=Path, metavar="DIR", help="tokenizer directory")
        parser.add_argument(
            "--height", type=int, default=fields["height"].default, help=fields["height"].description
        )
        parser.add_argument(
            "--width", type=int, default=fields["width"].default, help=fields["width"].description
        )
        parser.add_argument(
            "--aspect-buckets",
            action=argparse.BooleanOptionalAction,
            default=True,
            help=fields["aspect_buckets"].description,
        )
        parser.add_argument(
            "--num-frames",
            type=int,
            action="append",
            metavar="N",
            help="frame-count bucket, 4n+1 for Wan (repeatable; default 81)",
        )
        parser.add_argument(
            "--extraction", choices=EXTRACTION_MODES, default="head", help=fields["extraction"].description
        )
        parser.add_argument(
            "--clips-per-video",
            type=int,
            default=fields["clips_per_video"].default,
            help=fields["clips_per_video"].description,
        )
        parser.add_argument(
            "--fps",
            type=float,
            default=fields["fps"].default,
            help="resample videos to this rate (default 16, Wan's); 0 keeps each file's rate",
        )
        parser.add_argument("--rehash", action="store_true", help=fields["rehash"].description)
        parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
        parser.add_argument(
            "--dtype", default="auto", help="text-encoder dtype: auto, float32, bfloat16, float16"
        )
        parser.add_argument(
            "--progress",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="progress bar on stderr (default: when stderr is a terminal)",
        )

    def run(self, args: argparse.Namespace) -> int:
        """Prepare; print the summary (one line, then one per skipped item) on stdout."""
        from pusa_fw_wan.train.prepare.config import PrepareConfig
        from pusa_fw_wan.train.prepare.encoders import load_wan_encoders
        from pusa_fw_wan.train.prepare.run import prepare_dataset

        config = PrepareConfig(
            data=args.data,
            out=args.out,
            height=args.height,
            width=args.width,
            aspect_buckets=args.aspect_buckets,
            num_frames=tuple(args.num_frames or (81,)),
            extraction=args.extraction,
            clips_per_video=args.clips_per_video,
            rehash=args.rehash,
            fps=args.fps or None,
        )
        codec, text = load_wan_encoders(
            args.model,
            vae=args.vae,
            text_encoder=args.text_encoder,
            tokenizer=args.tokenizer,
            device=args.device,
            dtype=args.dtype,
        )
        progress = sys.stderr.isatty() if args.progress is None else args.progress
        summary = prepare_dataset(config, codec, text, progress=progress)
        sys.stdout.write("\n".join(summary.lines()) + "\n")
        return 0
