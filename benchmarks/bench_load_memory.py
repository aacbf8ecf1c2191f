"""Peak host memory of `WanDiT.from_pretrained` on a generated Wan2.1-T2V-1.3B-size checkpoint.

Writes a random bf16 checkpoint in the official layout (``config.json`` +
``diffusion_pytorch_model.safetensors``, 1.42 B parameters, ~2.8 GB) into a temp directory, then loads it
with ``from_pretrained(dtype=torch.bfloat16)`` in a fresh process and reads its peak RSS (``VmHWM``). A second
fresh process that only imports the package gives the baseline. The goal: peak - baseline is about one
copy of the weights (ratio ~1.0 of the checkpoint size; a naive load that keeps a state dict and a model
would be ~2.0).

    python benchmarks/bench_load_memory.py [--json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from pusa_fw_wan import WanConfig, WanDiT
from pusa_fw_wan.weights.safetensors import write_streaming

# VmHWM (peak RSS of this address space): ru_maxrss would carry the parent's peak over execve.
_PEAK_RSS = """
def peak_rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""
_CHILD_LOAD = (
    _PEAK_RSS
    + """
import json, sys, time
import torch
from pusa_fw_wan import WanDiT
start = time.perf_counter()
model = WanDiT.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
seconds = time.perf_counter() - start
parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"peak_rss_mb": peak_rss_mb(), "load_s": seconds, "model_bytes": parameter_bytes}))
"""
)
_CHILD_BASELINE = (
    _PEAK_RSS
    + """
import json
import torch
from pusa_fw_wan import WanDiT
print(json.dumps({"peak_rss_mb": peak_rss_mb()}))
"""
)


def write_checkpoint(directory: Path, config: WanConfig) -> int:
    """Random bf16 weights with the official names; returns the weight file size in bytes."""
    with torch.device("meta"):
        skeleton = WanDiT(config)
    specs = {name: (torch.bfloat16, tuple(t.shape)) for name, t in skeleton.state_dict().items()}
    generator = torch.Generator().manual_seed(0)

    def produce(name: str) -> torch.Tensor:
        dtype, shape = specs[name]
        return torch.empty(shape, dtype=torch.float32).normal_(0.0, 0.02, generator=generator).to(dtype)

    weights = directory / "diffusion_pytorch_model.safetensors"
    write_streaming(weights, specs, produce)
    (directory / "config.json").write_text(json.dumps(config.to_official_json(), indent=2))
    return weights.stat().st_size


def run_child(code: str, *args: str) -> dict[str, float]:
    completed = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure(directory: Path) -> dict[str, float]:
    config = WanConfig.t2v_1_3b()
    start = time.perf_counter()
    checkpoint_bytes = write_checkpoint(directory, config)
    write_seconds = time.perf_counter() - start
    baseline = run_child(_CHILD_BASELINE)
    loaded = run_child(_CHILD_LOAD, str(directory))
    checkpoint_mb = checkpoint_bytes / 2**20
    return {
        "checkpoint_mb": checkpoint_mb,
        "model_mb": loaded["model_bytes"] / 2**20,
        "baseline_rss_mb": baseline["peak_rss_mb"],
        "load_peak_rss_mb": loaded["peak_rss_mb"],
        "load_extra_over_checkpoint": (loaded["peak_rss_mb"] - baseline["peak_rss_mb"]) / checkpoint_mb,
        "load_s": loaded["load_s"],
        "write_s": write_seconds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", type=Path, help="write the checkpoint here and keep it (default: temp dir)")
    args = parser.parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        results = measure(args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="wan13b_") as directory:
            results = measure(Path(directory))
    if args.json:
        print(json.dumps(results))
        return
    print(
        f"checkpoint (bf16, 1.3B)        {results['checkpoint_mb']:.0f} MB "
        f"(model in memory {results['model_mb']:.0f} MB)"
    )
    print(f"baseline RSS (imports only)    {results['baseline_rss_mb']:.0f} MB")
    print(f"peak RSS of from_pretrained    {results['load_peak_rss_mb']:.0f} MB in {results['load_s']:.1f} s")
    print(f"(peak - baseline) / checkpoint {results['load_extra_over_checkpoint']:.3f}")


if __name__ == "__main__":
    main()
