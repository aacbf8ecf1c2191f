"""Peak host memory of the inference load (`WanDiT.from_pretrained`) per weights_dtype, against the stored size.

Writes two random Wan2.1-T2V-1.3B-size checkpoints in the official layout into a temp directory (streamed,
one tensor at a time): a bf16 one (~2.8 GB, as released) and a "scaled fp8" one (block linears
float8_e4m3fn with ``scale_weight``, the rest bf16, ~1.5 GB, as users repackage them). Then each case loads
in a fresh process, the way ``pusa-fw generate`` loads the DiT (``from_pretrained(dtype=..., weights_dtype=...)``
onto the CPU), and reads its peak RSS (``VmHWM``); a second fresh process that only imports the package
gives the baseline. The figure of merit is

    (peak - baseline) / stored bytes of the loaded model (parameters + buffers)

goal <= 1.15: about one copy of the weights *in their storage dtype* (no float32 copy, no state dict
beside the model). ``--size small`` uses 6 blocks instead of 30 for a quick run.

The ``train`` rows load the same files the way ``pusa-fw train`` does: the trainer's ``build_model`` (the Wan
training adapter: float32 compute, the frozen base in ``weights_dtype``, LoRA r = 64 on Pusa's targets in
float32), against a baseline process that imports the trainer and peft too; stored bytes include the LoRA.

    python benchmarks/bench_load_memory.py [--json] [--keep DIR] [--size 1.3b|small]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from pusa_fw_wan import WanConfig, WanDiT
from pusa_fw_wan.dit.storage import is_large_linear, quantize_fp8
from pusa_fw_wan.weights.safetensors import write_streaming

GOAL = 1.15
# (checkpoint, compute dtype, weights_dtype)
CASES = (
    ("bf16", "float32", "float32"),
    ("bf16", "bfloat16", "bfloat16"),
    ("bf16", "float32", "bfloat16"),
    ("bf16", "bfloat16", "float8_e4m3fn"),
    ("fp8", "bfloat16", "auto"),
    ("fp8", "float32", "auto"),
)
# (checkpoint, weights_dtype) loaded by the trainer's build_model (LoRA r = 64, compute float32)
TRAIN_CASES = (
    ("bf16", "float32"),
    ("bf16", "bfloat16"),
    ("bf16", "float8_e4m3fn"),
    ("fp8", "float8_e4m3fn"),
)
TRAIN_LORA_RANK = 64

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
from pusa_fw_wan.dit.storage import storage_bytes
start = time.perf_counter()
model = WanDiT.from_pretrained(sys.argv[1], dtype=getattr(torch, sys.argv[2]), weights_dtype=sys.argv[3])
seconds = time.perf_counter() - start
print(json.dumps({"peak_rss_mb": peak_rss_mb(), "load_s": seconds, "stored_bytes": storage_bytes(model),
                  "weights_dtype": str(model.weights_dtype).replace("torch.", "")}))
"""
)
_CHILD_BASELINE = (
    _PEAK_RSS
    + """
import json
import torch
from pusa_fw_wan import WanDiT
from pusa_fw_wan.dit.storage import storage_bytes
print(json.dumps({"peak_rss_mb": peak_rss_mb()}))
"""
)


_TRAIN_IMPORTS = """
import json, sys, time
import torch
import peft
from pusa_fw_wan.dit.storage import storage_bytes
from pusa_fw_train.adapter import get_train_adapter
from pusa_fw_train.build import build_model
from pusa_fw_train.config import validate_train_config
"""
_CHILD_TRAIN = (
    _PEAK_RSS
    + _TRAIN_IMPORTS
    + """
config = validate_train_config({
    "output_dir": "unused", "max_steps": 1, "model": {"path": sys.argv[1]}, "data": {"source": "random"},
    "weights_dtype": sys.argv[2], "lora": {"rank": int(sys.argv[3]), "alpha": float(sys.argv[3])},
    "device": "cpu",
})
start = time.perf_counter()
model, _ = build_model(config, get_train_adapter("wan2.1-t2v"))
seconds = time.perf_counter() - start
storage = model.blocks[0].ffn[0].base_layer.weight.dtype
print(json.dumps({"peak_rss_mb": peak_rss_mb(), "load_s": seconds, "stored_bytes": storage_bytes(model),
                  "weights_dtype": str(storage).replace("torch.", "")}))
"""
)
_CHILD_TRAIN_BASELINE = (
    _PEAK_RSS
    + _TRAIN_IMPORTS
    + """
print(json.dumps({"peak_rss_mb": peak_rss_mb()}))
"""
)


def _specs(config: WanConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        skeleton = WanDiT(config)
    return {name: tuple(tensor.shape) for name, tensor in skeleton.state_dict().items()}


def write_checkpoints(directory: Path, config: WanConfig) -> dict[str, Path]:
    """The bf16 and the scaled-fp8 checkpoint of the same random weights; returns their directories."""
    shapes = _specs(config)
    paths = {}
    for kind in ("bf16", "fp8"):
        folder = directory / kind
        folder.mkdir(parents=True, exist_ok=True)
        specs: dict[str, tuple[torch.dtype, tuple[int, ...]]] = {}
        for name, shape in shapes.items():
            module = name.rpartition(".")[0]
            if kind == "fp8" and name.endswith(".weight") and is_large_linear(module):
                specs[name] = (torch.float8_e4m3fn, shape)
                specs[f"{module}.scale_weight"] = (torch.float32, ())
            else:
                specs[name] = (torch.bfloat16, shape)
        generator = torch.Generator().manual_seed(0)
        scales: dict[str, torch.Tensor] = {}

        def produce(name: str, specs=specs, generator=generator, scales=scales) -> torch.Tensor:
            dtype, shape = specs[name]
            if name.endswith(".scale_weight"):
                return scales.pop(name)
            values = torch.empty(shape, dtype=torch.bfloat16).normal_(0.0, 0.02, generator=generator)
            if dtype == torch.float8_e4m3fn:
                stored, scale = quantize_fp8(values, dtype)
                scales[f"{name.rpartition('.')[0]}.scale_weight"] = scale
                return stored
            return values

        write_streaming(folder / "diffusion_pytorch_model.safetensors", specs, produce)
        (folder / "config.json").write_text(json.dumps(config.to_official_json(), indent=2))
        paths[kind] = folder
    return paths


def run_child(code: str, *args: str) -> dict[str, float]:
    completed = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


@dataclasses.dataclass
class Row:
    checkpoint: str
    checkpoint_mb: float
    compute_dtype: str
    weights_dtype: str
    stored_mb: float
    extra_peak_mb: float
    ratio: float
    load_s: float
    path: str = "generate"


def measure(directory: Path, config: WanConfig) -> list[Row]:
    paths = write_checkpoints(directory, config)
    baseline = run_child(_CHILD_BASELINE)["peak_rss_mb"]
    rows = []
    for kind, compute, weights_dtype in CASES:
        loaded = run_child(_CHILD_LOAD, str(paths[kind]), compute, weights_dtype)
        stored_mb = loaded["stored_bytes"] / 2**20
        extra = loaded["peak_rss_mb"] - baseline
        size = (paths[kind] / "diffusion_pytorch_model.safetensors").stat().st_size / 2**20
        rows.append(
            Row(
                kind,
                size,
                compute,
                str(loaded["weights_dtype"]),
                stored_mb,
                extra,
                extra / stored_mb,
                loaded["load_s"],
            )
        )
    train_baseline = run_child(_CHILD_TRAIN_BASELINE)["peak_rss_mb"]
    for kind, weights_dtype in TRAIN_CASES:
        loaded = run_child(_CHILD_TRAIN, str(paths[kind]), weights_dtype, str(TRAIN_LORA_RANK))
        stored_mb = loaded["stored_bytes"] / 2**20
        extra = loaded["peak_rss_mb"] - train_baseline
        size = (paths[kind] / "diffusion_pytorch_model.safetensors").stat().st_size / 2**20
        stored = str(loaded["weights_dtype"])
        ratio = extra / stored_mb
        rows.append(Row(kind, size, "float32", stored, stored_mb, extra, ratio, loaded["load_s"], "train"))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON list")
    parser.add_argument(
        "--keep", type=Path, help="write the checkpoints here and keep them (default: temp dir)"
    )
    parser.add_argument("--size", choices=("1.3b", "small"), default="1.3b", help="30 blocks (1.3B) or 6")
    args = parser.parse_args(argv)
    config = WanConfig.t2v_1_3b()
    if args.size == "small":
        config = config.model_copy(update={"num_layers": 6})
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        rows = measure(args.keep, config)
    else:
        with tempfile.TemporaryDirectory(prefix="wan_load_") as directory:
            rows = measure(Path(directory), config)
    if args.json:
        print(json.dumps([dataclasses.asdict(row) for row in rows]))
        return
    print(
        f"Wan2.1 T2V {args.size} ({config.num_layers} blocks), CPU load, goal (peak - baseline) / stored <= {GOAL}"
    )
    print(
        f"{'path':<9}{'file':<6}{'file MB':>9}{'compute':>10}{'weights_dtype':>15}{'stored MB':>11}{'peak-base MB':>14}"
        f"{'ratio':>7}{'load s':>8}"
    )
    for row in rows:
        print(
            f"{row.path:<9}{row.checkpoint:<6}{row.checkpoint_mb:>9.0f}{row.compute_dtype:>10}{row.weights_dtype:>15}"
            f"{row.stored_mb:>11.0f}{row.extra_peak_mb:>14.0f}{row.ratio:>7.3f}{row.load_s:>8.1f}"
        )


if __name__ == "__main__":
    main()
