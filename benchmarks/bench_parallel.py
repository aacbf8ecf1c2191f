"""Ulysses sequence parallelism on CPU with gloo: all-to-all volume, compute/communication split, and a
projection to 8 GPUs at Wan2.1-14B 720p.

1. Runs a small random WanDiT (dim 256, 4 heads, 2 blocks; latents 1x16x8x16x16 = 512 tokens) under
   ``torchrun --nproc_per_node N`` with ``--ulysses N`` for N = 1, 2, 4
   (`pusa_fw_wan.testing.parallel_worker`), and reports per forward: the bytes rank 0 sent through
   all-to-all next to the analytic Ulysses figure
   ``blocks * 4 * B * ceil(F / N) * S * D * bytes * (N - 1) / N`` (q, k, v out and the attention result
   back; S tokens per frame, padded frames included), the forward time, the time inside the all-to-all
   calls, and the rest (compute). The CPU numbers are from processes sharing the machine's cores.
2. PROJECTION (not a measurement): the per-rank volume formula (checked against the measurement in 1) at
   14B 720p (40 blocks, D 5120, 21 frames x 3600 tokens, bf16) on 8 ranks, moved at the published NVLink 4
   bandwidth of an H100 SXM (450 GB/s per direction), against a one-GPU forward at the compute floor of
   `docs/performance_reference.md` (6.523e15 FLOPs, 72 % attention core) at an assumed 65 % MFU, with the
   local (non-attention) work inflated by the frame padding (21 frames on 8 ranks -> 3 per rank, 24 slots)
   and no overlap of communication with compute. Official Wan2.1 8-GPU efficiency: 80 % (H100, 720p).

    python benchmarks/bench_parallel.py [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pusa_fw_wan.parallel.launch import run_torchrun
from pusa_fw_wan.testing.parallel_worker import write_random_dit

SMALL = {"dim": 256, "num_heads": 4, "num_layers": 2, "ffn_dim": 512, "freq_dim": 64, "text_dim": 64,
         "text_len": 32}
LATENTS = (1, 16, 8, 16, 16)  # B, C, F, H, W -> 8 frames x 64 tokens
NVLINK_BYTES_PER_S = 450e9  # H100 SXM NVLink 4: 900 GB/s total, 450 GB/s per direction
FLOPS_14B_720P = 6.523e15
ATTENTION_SHARE_720P = 0.72
H100_PEAK = 989.4e12
ASSUMED_MFU = 0.65
OFFICIAL_8_GPU_EFFICIENCY = 0.80


def ulysses_bytes(blocks: int, batch: int, frames: int, tokens_per_frame: int, dim: int, element_bytes: int,
                  ranks: int) -> float:
    """Analytic bytes one rank sends per forward (padded frame shards; q, k, v out, result back)."""
    if ranks == 1:
        return 0.0
    local_tokens = math.ceil(frames / ranks) * tokens_per_frame
    return blocks * 4 * batch * local_tokens * dim * element_bytes * (ranks - 1) / ranks


def measure(ranks: int, directory: Path, repeat: int) -> dict[str, float]:
    """Run the worker on ``ranks`` processes; per-forward bytes and seconds of rank 0 (median forward)."""
    out = directory / f"out_{ranks}.safetensors"
    result = run_torchrun(
        ["-m", "pusa_fw_wan.testing.parallel_worker", "--model", str(directory / "dit"),
         "--cases", str(directory / "cases.safetensors"), "--out", str(out), "--ulysses", str(ranks),
         "--repeat", str(repeat)],
        nproc=ranks, timeout=900,
    )
    if result.returncode != 0:
        raise SystemExit(f"torchrun with {ranks} processes failed:\n{result.stderr[-2000:]}")
    sent, comm, forward = load_file(str(out))["stats"].tolist()
    return {"ranks": ranks, "sent_bytes": sent, "comm_s": comm, "forward_s": forward,
            "compute_s": forward - comm}


def projection(measured_over_analytic: float) -> dict[str, float]:
    """Projected 8-GPU Ulysses efficiency at 14B 720p (see the module docstring)."""
    ranks, frames, tokens_per_frame, dim, blocks = 8, 21, 45 * 80, 5120, 40
    volume = ulysses_bytes(blocks, 1, frames, tokens_per_frame, dim, 2, ranks) * measured_over_analytic
    one_gpu = FLOPS_14B_720P / (H100_PEAK * ASSUMED_MFU)
    padding = math.ceil(frames / ranks) * ranks / frames
    compute = one_gpu * (ATTENTION_SHARE_720P + (1 - ATTENTION_SHARE_720P) * padding) / ranks
    communication = volume / NVLINK_BYTES_PER_S
    return {"bytes_per_rank": volume, "one_gpu_s": one_gpu, "compute_s": compute, "comm_s": communication,
            "padding": padding, "efficiency": one_gpu / (ranks * (compute + communication))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="forwards per run (the median is reported)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        write_random_dit(directory / "dit", **SMALL)
        generator = torch.Generator().manual_seed(0)
        batch, _, frames, height, width = LATENTS
        save_file({"latents": torch.randn(LATENTS, generator=generator),
                   "context": torch.randn(batch, 12, SMALL["text_dim"], generator=generator),
                   "sigmas.frames": torch.rand(batch, frames, generator=generator)},
                  str(directory / "cases.safetensors"))
        rows = [measure(ranks, directory, args.repeat) for ranks in args.ranks]
    tokens_per_frame = (height // 2) * (width // 2)
    for row in rows:
        row["analytic_bytes"] = ulysses_bytes(SMALL["num_layers"], batch, frames, tokens_per_frame,
                                              SMALL["dim"], 4, int(row["ranks"]))
    ratios = [row["sent_bytes"] / row["analytic_bytes"] for row in rows if row["analytic_bytes"]]
    projected = projection(ratios[0] if ratios else 1.0)
    if args.json:
        json.dump({"cpu": rows, "projection_14b_720p_8gpu": projected}, sys.stdout, indent=2)
        return
    base = rows[0]["forward_s"] if rows[0]["ranks"] == 1 else float("nan")
    print(f"CPU gloo, dim {SMALL['dim']}, {SMALL['num_layers']} blocks, {frames} frames x {tokens_per_frame} "
          "tokens, fp32, per forward (rank 0, median):")
    print("| ranks | all-to-all bytes | analytic bytes | forward ms | all-to-all ms | compute ms |"
          " efficiency |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        efficiency = base / (row["ranks"] * row["forward_s"])
        print(f"| {row['ranks']:.0f} | {row['sent_bytes']:,.0f} | {row['analytic_bytes']:,.0f} | "
              f"{1e3 * row['forward_s']:.1f} | {1e3 * row['comm_s']:.1f} | {1e3 * row['compute_s']:.1f} | "
              f"{100 * efficiency:.0f} % |")
    print("\nPROJECTION (not measured): Wan2.1-14B 720p, 8 ranks Ulysses, bf16, NVLink 450 GB/s per "
          f"direction, {100 * ASSUMED_MFU:.0f} % MFU, no comm/compute overlap")
    print("| all-to-all per rank per forward | 1-GPU forward | 8-GPU compute | 8-GPU all-to-all | padding |"
          " projected efficiency | official Wan2.1 |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {projected['bytes_per_rank'] / 1e9:.2f} GB | {projected['one_gpu_s']:.2f} s | "
          f"{projected['compute_s']:.3f} s | {1e3 * projected['comm_s']:.1f} ms | "
          f"{projected['padding']:.3f}x | "
          f"{100 * projected['efficiency']:.0f} % | {100 * OFFICIAL_8_GPU_EFFICIENCY:.0f} % |")


if __name__ == "__main__":
    main()
