"""Peak memory and time of tiled vs untiled Wan-VAE decode (and encode) on CPU.

Real architecture (dim 96, z_dim 16, random weights), fp32. Every measurement runs in its own
subprocess and reads the peak resident set size (``ru_maxrss``) of that process, so runs do not
contaminate each other. ``working`` is the peak minus the resident size just before the pass
(model, input and interpreter excluded); it is what ``WanVAE.memory_budget_bytes`` budgets. ``estimate``
is the library's estimate for one pass (one tile when tiled), the number it compares with the budget.

Usage::

    python benchmarks/bench_vae.py     # 480x832, 17 frames, decode untiled vs tiled at a 4 GiB budget
    python benchmarks/bench_vae.py --height 720 --width 1280 --frames 5 --modes auto --budget-gib 10
    python benchmarks/bench_vae.py --direction encode

Prints a table (this is a script: printing is its job).

Measured on the 2-core / 24 GB development machine (torch 2.13 CPU, other jobs running, so wall time is
noisy and CPU time is the better guide); peak and working in GiB::

    decode 480x832 x 17 frames, budget 4 GiB    tiles  tile       wall s  cpu s   peak  working  estimate
    untiled                                      1      -          649.4  1004.3  8.31  7.61     8.00
    tiled                                        6      272x320px  672.2  1233.2  2.77  2.06     1.74
    decode 480x832 x 5 frames, budget 4 GiB
    untiled                                      1      -          531.5   312.6  8.01  7.31     8.00
    tiled                                        6      272x320px  355.1   407.6  2.59  1.89     1.74
    decode 720x1280 x 5 frames, default budget (10 GiB)
    auto                                         4      392x672px  704.5   771.9  5.84  5.14     5.28

Working memory does not grow with the frame count beyond the output video (chunked causal decode); tiling
cuts it by the tile area, for ~1.25x the CPU time (overlaps are decoded twice). The estimate is per pass
(one tile when tiled) and excludes the output and the blend buffers, which explains the 0.3 GiB gap.
An untiled 720p decode would need ~18.5 GiB of working memory (the estimate, 2.3x the 480p figure).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; falls back to the peak elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return _peak_bytes()


def _peak_bytes() -> int:
    """Peak resident set size of this process so far (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu_seconds() -> float:
    """User + system CPU time of this process (robust to other load on the machine, unlike wall time)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(args: argparse.Namespace) -> dict[str, float | int | str]:
    """One measurement inside a fresh process: build the model, run one pass, report peak and time."""
    import torch

    from pusa_fw_wan import WanVAE

    torch.manual_seed(0)
    torch.set_num_threads(args.threads) if args.threads else None
    options = {"memory_budget_bytes": args.budget_gib * 1024**3}
    if args.tile_size:
        options["tile_size"] = args.tile_size
    vae = WanVAE(dim=args.dim, z_dim=16, **options).eval()
    num_latents = (args.frames - 1) // 4 + 1
    tiled = {"untiled": False, "tiled": True, "auto": None}[args.mode]
    if args.direction == "decode":
        x = torch.randn(1, 16, num_latents, args.height // 8, args.width // 8)
        plan = vae.tile_plan(args.height, args.width, "decode", tiled)
    else:
        x = torch.rand(1, 3, args.frames, args.height, args.width) * 2 - 1
        plan = vae.tile_plan(args.height, args.width, "encode", tiled)
    before = _rss_bytes()
    cpu_before = _cpu_seconds()
    start = time.perf_counter()
    out = vae.decode(x, tiled=tiled) if args.direction == "decode" else vae.encode(x, tiled=tiled)
    seconds = time.perf_counter() - start
    cpu_seconds = _cpu_seconds() - cpu_before
    peak = _peak_bytes()
    return {
        "mode": args.mode,
        "tiles": 1 if plan is None else plan.num_tiles,
        "tile": "-" if plan is None else f"{plan.tile_height * 8}x{plan.tile_width * 8}px",
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_bytes": peak,
        "working_bytes": peak - before,
        "estimate_bytes": vae.estimate_bytes(args.height, args.width, args.direction)
        if plan is None
        else vae.estimate_bytes(plan.tile_height * 8, plan.tile_width * 8, args.direction),
        "output_bytes": out.numel() * out.element_size(),
        "out_shape": "x".join(map(str, out.shape)),
    }


def _spawn(args: argparse.Namespace, mode: str) -> dict[str, float | int | str]:
    """Run `worker` for `mode` in a subprocess and return its JSON result."""
    command = [
        sys.executable, __file__, "--worker", "--mode", mode,
        "--direction", args.direction, "--dim", str(args.dim), "--height", str(args.height),
        "--width", str(args.width), "--frames", str(args.frames), "--budget-gib", str(args.budget_gib),
        "--tile-size", str(args.tile_size), "--threads", str(args.threads),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    if result.returncode != 0:
        raise SystemExit(f"worker {mode} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--direction", choices=("decode", "encode"), default="decode")
    parser.add_argument("--dim", type=int, default=96)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument(
        "--budget-gib", type=float, default=4.0, help="memory budget that sizes the tiles (library default: 10)"
    )
    parser.add_argument("--tile-size", type=int, default=0, help="tile side in latents (0: from the budget)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--modes", default="untiled,tiled", help="comma list of untiled, tiled, auto")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="untiled", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    gib = 1024**3
    print(
        f"Wan-VAE {args.direction}, dim {args.dim}, {args.height}x{args.width} x {args.frames} frames, fp32 CPU, "
        f"budget {args.budget_gib} GiB (one subprocess per row, peak = ru_maxrss)"
    )
    header = (
        f"{'mode':<9}{'tiles':>6}{'tile':>13}{'wall s':>9}{'cpu s':>9}{'peak GiB':>10}{'working GiB':>13}"
        f"{'estimate GiB':>14}"
    )
    print(header)
    print("-" * len(header))
    for mode in args.modes.split(","):
        row = _spawn(args, mode)
        print(
            f"{row['mode']:<9}{row['tiles']:>6}{row['tile']:>13}{row['seconds']:>9.1f}{row['cpu_seconds']:>9.1f}"
            f"{row['peak_bytes'] / gib:>10.2f}{row['working_bytes'] / gib:>13.2f}{row['estimate_bytes'] / gib:>14.2f}",
            flush=True,
        )
    print(f"output {row['out_shape']} = {row['output_bytes'] / gib:.2f} GiB (included in working)")


if __name__ == "__main__":
    main()
