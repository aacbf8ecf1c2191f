"""WanDiT vs diffusers' WanTransformer3DModel on CPU, fp32, side by side, same random weights.

1.3B-width config (dim 1536, ffn 8960, 12 heads, freq_dim 256, text_dim 4096) with 2 layers, latents
1x16x5x30x52 (L = 5*15*26 = 1950 tokens), a 512-row context. Four variants, interleaved round-robin,
one warm-up each, then the median of ``--repeats`` runs:

- ours_scalar: ``forward_timesteps`` with one timestep per sample ``[B]``;
- ours_vector: per-frame timesteps ``[B, F]`` (5 distinct values);
- diffusers_scalar: ``timestep [B]``;
- diffusers_pertoken: ``timestep [B, L]`` (the same per-frame values repeated over each frame's tokens).

Peak memory of ours (scalar and vector) is measured in separate processes (``--peak MODE``): the
``*_peak_mb`` keys are the peak of live tensor bytes (weights + inputs + every tensor the forward creates,
tracked at the dispatcher), the ``*_peak_rss_mb`` keys the process' peak RSS (``VmHWM``), which moves by
a few per cent from run to run with the allocator. ``matmul_gflops`` is a plain 3072^3 fp32 matmul's throughput here.

    python benchmarks/bench_backbone.py [--json] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from pusa_fw_wan import WanConfig, WanDiT

CONFIG = WanConfig(dim=1536, ffn_dim=8960, num_heads=12, freq_dim=256, text_dim=4096, num_layers=2)
LATENT_SHAPE = (1, 16, 5, 30, 52)
TEXT_ROWS = 512
FRAME_TIMESTEPS = (999.0, 800.0, 500.0, 250.0, 0.0)
MATMUL_SIZE = 3072


def forward_gflop(config: WanConfig, latent_shape: tuple[int, ...], text_rows: int) -> float:
    """Multiply-add FLOPs (2 per MAC) of one forward, in GFLOP (time MLP and norms left out: < 0.1 %)."""
    _, channels, frames, height, width = latent_shape
    _, patch_height, patch_width = config.patch_size
    tokens = frames * (height // patch_height) * (width // patch_width)
    dim, ffn = config.dim, config.ffn_dim
    per_block = (
        tokens * (12 * dim * dim + 4 * dim * ffn)  # q,k,v,o self + q,o cross + FFN
        + 4 * tokens * tokens * dim  # self-attention scores and values
        + 4 * tokens * config.text_len * dim  # cross-attention scores and values
        + 4 * config.text_len * dim * dim  # cross-attention k, v on the text rows
    )
    embeddings = (
        2 * tokens * channels * config.patch_volume * dim  # patch embedding
        + 2 * config.text_len * (config.text_dim * dim + dim * dim)  # text embedding
        + 2 * tokens * dim * config.out_dim * config.patch_volume  # head
    )
    return (config.num_layers * per_block + embeddings) / 1e9


def build_inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(LATENT_SHAPE, generator=generator)
    context = torch.randn(1, TEXT_ROWS, CONFIG.text_dim, generator=generator)
    frame_timesteps = torch.tensor([FRAME_TIMESTEPS])
    tokens_per_frame = (LATENT_SHAPE[3] // 2) * (LATENT_SHAPE[4] // 2)
    return {
        "latents": latents,
        "context": context,
        "scalar_timesteps": torch.tensor([500.0]),
        "frame_timesteps": frame_timesteps,
        "token_timesteps": frame_timesteps.repeat_interleave(tokens_per_frame, dim=1),
    }


def build_ours(seed: int = 0) -> WanDiT:
    torch.manual_seed(seed)
    return WanDiT(CONFIG).eval()


def build_diffusers(ours: WanDiT) -> torch.nn.Module:
    from diffusers import WanTransformer3DModel

    from pusa_fw_wan.dit.key_mapping import official_to_diffusers

    reference = WanTransformer3DModel(**CONFIG.to_diffusers_kwargs())
    reference.load_state_dict(
        {official_to_diffusers(k): v for k, v in ours.state_dict().items()}, strict=True
    )
    return reference.eval()


def time_call(function: Callable[[], torch.Tensor]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def matmul_gflops(repeats: int) -> float:
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=generator)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=generator)
    torch.mm(a, b)
    seconds = statistics.median(time_call(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * MATMUL_SIZE**3 / seconds / 1e9


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB.

    ``VmHWM`` from /proc belongs to the current address space; ``ru_maxrss`` is carried over ``execve``
    on Linux, so a child started by a big parent would report the parent's peak.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class TensorMemoryTracker(TorchDispatchMode):
    """Peak of live tensor bytes: the given tensors (weights, inputs) plus every storage an op creates,
    released when the storage is freed. Deterministic, unlike RSS (allocator and page-cache noise)."""

    def __init__(self, existing: list[torch.Tensor]) -> None:
        super().__init__()
        self.seen: set[int] = set()
        self.live = 0
        for tensor in existing:
            self._count(tensor.untyped_storage(), release=False)
        self.peak = self.live

    def _count(self, storage: torch.UntypedStorage, release: bool = True) -> None:
        key = storage.data_ptr()
        if key in self.seen or storage.nbytes() == 0:
            return
        self.seen.add(key)
        self.live += storage.nbytes()
        if release:
            weakref.finalize(storage, self._release, key, storage.nbytes())

    def _release(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self.seen.discard(key)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self._count(value.untyped_storage())
                self.peak = max(self.peak, self.live)
        return out


def peak_child(mode: str) -> dict[str, float]:
    """Runs in a fresh process: one forward of ours; peak tensor bytes (tracked) and peak RSS, in MB."""
    ours = build_ours()
    inputs = build_inputs()
    timesteps = inputs["scalar_timesteps"] if mode == "scalar" else inputs["frame_timesteps"]
    before = peak_rss_mb()
    tracker = TensorMemoryTracker([*ours.parameters(), *inputs.values()])
    with torch.no_grad(), tracker:
        ours.forward_timesteps(inputs["latents"], timesteps, inputs["context"])
    return {"rss_before_mb": before, "rss_peak_mb": peak_rss_mb(), "tensor_peak_mb": tracker.peak / 2**20}


def run_peak(mode: str) -> dict[str, float]:
    completed = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--peak", mode],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout)


def time_variants(repeats: int) -> tuple[dict[str, float], float]:
    """Median seconds of each variant (round-robin, order reversed every other round) and the max-abs
    difference between ours (per-frame) and diffusers (per-token)."""
    torch.manual_seed(0)
    inputs = build_inputs()
    ours = build_ours()
    reference = build_diffusers(ours)
    latents, context = inputs["latents"], inputs["context"]
    variants: dict[str, Callable[[], torch.Tensor]] = {
        "ours_scalar": lambda: ours.forward_timesteps(latents, inputs["scalar_timesteps"], context),
        "ours_vector": lambda: ours.forward_timesteps(latents, inputs["frame_timesteps"], context),
        "diffusers_scalar": lambda: reference(
            latents, inputs["scalar_timesteps"], context, return_dict=False
        )[0],
        "diffusers_pertoken": lambda: reference(
            latents, inputs["token_timesteps"], context, return_dict=False
        )[0],
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.no_grad():
        for function in variants.values():
            function()  # warm-up
        for round_index in range(repeats):
            order = list(variants.items())
            for name, function in order if round_index % 2 == 0 else reversed(order):
                times[name].append(time_call(function))
        agreement = (variants["ours_vector"]() - variants["diffusers_pertoken"]()).abs().max().item()
    return {f"{name}_s": statistics.median(values) for name, values in times.items()}, agreement


def run(repeats: int) -> dict[str, float]:
    results, agreement = time_variants(repeats)
    scalar_peak, vector_peak = run_peak("scalar"), run_peak("vector")
    gflop = forward_gflop(CONFIG, LATENT_SHAPE, TEXT_ROWS)
    results.update(
        {
            "ours_vector_peak_mb": vector_peak["tensor_peak_mb"],
            "ours_scalar_peak_mb": scalar_peak["tensor_peak_mb"],
            "ours_vector_peak_rss_mb": vector_peak["rss_peak_mb"],
            "ours_scalar_peak_rss_mb": scalar_peak["rss_peak_mb"],
            "gflop_per_forward": gflop,
            "ours_gflops": gflop / results["ours_scalar_s"],
            "matmul_gflops": matmul_gflops(repeats),
            "ours_vs_diffusers_pertoken_maxabs": agreement,
            "threads": torch.get_num_threads(),
            "repeats": repeats,
            "load_average_1min": os.getloadavg()[0],
        }
    )
    return results


def print_table(results: dict[str, float]) -> None:
    rows = [
        ("ours, scalar timestep", f"{results['ours_scalar_s']:.3f} s"),
        ("ours, per-frame timesteps", f"{results['ours_vector_s']:.3f} s"),
        ("diffusers, scalar timestep", f"{results['diffusers_scalar_s']:.3f} s"),
        ("diffusers, per-token timesteps", f"{results['diffusers_pertoken_s']:.3f} s"),
        (
            "ours vector / ours scalar",
            f"{results['ours_vector_s'] / results['ours_scalar_s']:.3f} (target <= 1.02)",
        ),
        (
            "ours scalar / diffusers scalar",
            f"{results['ours_scalar_s'] / results['diffusers_scalar_s']:.3f} (target <= 1.0)",
        ),
        (
            "ours vector / diffusers per-token",
            f"{results['ours_vector_s'] / results['diffusers_pertoken_s']:.3f} (target <= 0.85)",
        ),
        (
            "peak tensor memory ours scalar / vector",
            (
                f"{results['ours_scalar_peak_mb']:.1f} / {results['ours_vector_peak_mb']:.1f} MB (ratio "
                f"{results['ours_vector_peak_mb'] / results['ours_scalar_peak_mb']:.4f}, target <= 1.01)"
            ),
        ),
        (
            "peak RSS ours scalar / vector",
            f"{results['ours_scalar_peak_rss_mb']:.0f} / {results['ours_vector_peak_rss_mb']:.0f} MB (allocator noise)",
        ),
        ("GFLOP per forward", f"{results['gflop_per_forward']:.1f}"),
        ("ours GFLOP/s vs plain matmul", f"{results['ours_gflops']:.1f} vs {results['matmul_gflops']:.1f}"),
        ("max-abs ours vs diffusers (per-token)", f"{results['ours_vs_diffusers_pertoken_maxabs']:.2e}"),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant (median; >= 3)")
    parser.add_argument("--peak", choices=["scalar", "vector"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peak:
        print(json.dumps(peak_child(args.peak)))
        return
    if args.repeats < 3:
        parser.error(f"--repeats {args.repeats}: use at least 3 for a median")
    results = run(args.repeats)
    if args.json:
        print(json.dumps(results))
    else:
        print_table(results)


if __name__ == "__main__":
    main()
