"""One prepared GPU check of the 14B-width DiT (4 real blocks, 480p token count): speed, memory, DCP resume.

On one GPU (H100 80 GB: well under 8 minutes) it builds a Wan2.1-14B-width `WanDiT` with 4 random blocks
(dim 5120, 40 heads, ffn 13824, text dim 4096) and at L = 21 x 30 x 52 = 32,760 tokens measures:

- forward time with bf16 and fp8 (e4m3fn) weight storage, per-frame and scalar sigmas, and the MFU of the
  forward against the card's dense bf16 peak (FLOPs of the 4 blocks by the formula of
  `docs/performance_reference.md`: 12 L d^2 + 4 L d f + 4 L^2 d + 4 L 512 d + 4 512 d^2 per block);
- the LoRA training step (r 512, Pusa targets, fp32 factors, AdamW, gradient checkpointing) per storage;
- the peak device memory of each against `bench_memory`'s projection for the same 4 blocks;
- the overhead of inference block offload (`--offload block`, next block prefetched) over resident weights;
- a DCP save and resume of the LoRA and AdamW state (world size 1): the next step after the resume must
  give the same loss as without it.

It prints a table and writes JSON (``--json PATH``). ``--dry-run`` runs the same code on the CPU at a tiny
size (a test runs it in ``make test``).

    python benchmarks/gpu_check.py [--dry-run] [--json PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pusa_fw_wan import WanConfig, WanDiT  # noqa: E402
from pusa_fw_wan.pipeline.offload import BlockOffload  # noqa: E402

# Dense bf16 peaks (docs/performance_reference.md); matched on the device name.
BF16_PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "H800": 989.4, "A100": 312.0, "A800": 312.0, "4090": 165.0}
TARGETS = ("q", "k", "v", "o", "ffn.0", "ffn.2")


@dataclass(frozen=True)
class Size:
    config: WanConfig
    grid: tuple[int, int, int]  # latent frames, patches high, patches wide
    lora_rank: int
    repeats: int


FULL = Size(
    WanConfig(dim=5120, ffn_dim=13824, num_heads=40, text_dim=4096, num_layers=4), (21, 30, 52), 512, 3
)
TINY = Size(
    WanConfig(dim=256, ffn_dim=512, num_heads=2, text_dim=64, text_len=16, num_layers=2), (3, 4, 6), 8, 1
)


def forward_flops(config: WanConfig, tokens: int) -> float:
    """FLOPs of one forward of the model's blocks (2 per multiply-add)."""
    d, f = config.dim, config.ffn_dim
    per_block = 12 * tokens * d * d + 4 * tokens * d * f + 4 * tokens * tokens * d
    per_block += 4 * tokens * config.text_len * d + 4 * config.text_len * d * d
    return config.num_layers * per_block


def random_model(size: Size, device: torch.device) -> WanDiT:
    """Random weights (N(0, 0.02), norms 1) built on the meta device and materialised on `device`, bf16."""
    with torch.device("meta"):
        model = WanDiT(size.config)
    model = model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                parameter.fill_(1.0)
            else:
                parameter.normal_(0.0, 0.02, generator=generator)
    return model.set_compute_dtype(torch.bfloat16).eval().requires_grad_(False)


def inputs(size: Size, device: torch.device, per_frame: bool) -> dict[str, torch.Tensor]:
    frames, height, width = size.grid
    generator = torch.Generator(device=device).manual_seed(1)
    latents = torch.randn(1, 16, frames, 2 * height, 2 * width, device=device, generator=generator)
    sigmas = (
        torch.linspace(0.1, 0.9, frames, device=device)[None]
        if per_frame
        else torch.full((1,), 0.5, device=device)
    )
    rows = min(128, size.config.text_len)
    context = torch.randn(1, rows, size.config.text_dim, device=device, generator=generator)
    return {"latents": latents, "sigmas": sigmas, "context": context}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> float | None:
    return float(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def timed(function: Any, device: torch.device, repeats: int) -> float:
    """Median seconds of `function()` after one warm-up call."""
    function()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def inject_lora(model: WanDiT, rank: int) -> list[torch.nn.Parameter]:
    """Pusa-style LoRA (peft, fp32 factors, base frozen); returns the trainable parameters."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(TARGETS), lora_dropout=0.0)
    inject_adapter_in_model(config, model, adapter_name="default")
    trainable = []
    for name, parameter in model.named_parameters():
        if ".default." in name:
            parameter.data = parameter.data.float()
            parameter.requires_grad_(True)
            trainable.append(parameter)
    model.train().enable_gradient_checkpointing(True)
    return trainable


def train_step(model: WanDiT, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> float:
    """One LoRA step on a fixed target (the velocity regressed to zero): returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = model.velocity(**batch).float().square().mean()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def projected_peak(size: Size, weights_dtype: str, training: bool) -> float:
    """bench_memory's tensor-accounting figure for these blocks: weights + LoRA/AdamW state + activations."""
    import bench_memory
    from pusa_fw_wan.dit.storage import storage_bytes

    rank = size.lora_rank if training else None
    model = bench_memory.build(size.config.num_layers, weights_dtype, rank, config=size.config)
    frames, height, width = size.grid
    mode = "train_ckpt" if training else "inference"
    activations = bench_memory.run_blocks(model, (height, width), mode, frames=frames)["peak"]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # storage_bytes has the weights and the fp32 LoRA factors; + gradients and two AdamW moments (no EMA)
    return storage_bytes(model) + 12 * trainable + activations


def dcp_resume_check(
    size: Size,
    model: WanDiT,
    trainable: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
) -> dict[str, Any]:
    """Save LoRA + AdamW with torch.distributed.checkpoint, resume a copy, compare the next step's loss."""
    import torch.distributed.checkpoint as dcp

    def state_of(target_model: WanDiT, target_optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        lora = {name: p for name, p in target_model.named_parameters() if p.requires_grad}
        return {"lora": lora, "optimizer": target_optimizer.state_dict()}

    with tempfile.TemporaryDirectory(prefix="gpu_check_dcp_") as folder:
        start = time.perf_counter()
        dcp.save(state_of(model, optimizer), checkpoint_id=folder, no_dist=True)
        saved_s = time.perf_counter() - start
        resumed = copy.deepcopy(model)
        resumed_trainable = [p for p in resumed.parameters() if p.requires_grad]
        with torch.no_grad():
            for parameter in resumed_trainable:
                parameter.zero_()
        resumed_optimizer = torch.optim.AdamW(resumed_trainable, lr=1e-4)
        train_step(resumed, resumed_optimizer, batch)  # create the optimizer state, then overwrite it
        state = state_of(resumed, resumed_optimizer)
        start = time.perf_counter()
        dcp.load(state, checkpoint_id=folder, no_dist=True)
        resumed_optimizer.load_state_dict(state["optimizer"])
        loaded_s = time.perf_counter() - start
    expected = train_step(model, optimizer, batch)
    got = train_step(resumed, resumed_optimizer, batch)
    return {
        "save_s": saved_s,
        "load_s": loaded_s,
        "loss": expected,
        "resumed_loss": got,
        "exact": expected == got,
    }


def run(size: Size, device: torch.device) -> dict[str, Any]:
    frames, height, width = size.grid
    tokens = frames * height * width
    flops = forward_flops(size.config, tokens)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak_tflops = next((value for key, value in BF16_PEAK_TFLOPS.items() if key in name), None)
    report: dict[str, Any] = {
        "device": name,
        "tokens": tokens,
        "blocks": size.config.num_layers,
        "forward_tflop": flops / 1e12,
        "bf16_peak_tflops": peak_tflops,
        "rows": [],
    }
    base = random_model(size, device)
    for weights_dtype in ("bfloat16", "float8_e4m3fn"):
        model = copy.deepcopy(base).set_weights_dtype(weights_dtype)
        for per_frame in (True, False):
            batch = inputs(size, device, per_frame)
            _reset_peak(device)
            with torch.no_grad():
                seconds = timed(
                    lambda model=model, batch=batch: model.velocity(**batch), device, size.repeats
                )
            mfu = None if peak_tflops is None else flops / seconds / (peak_tflops * 1e12)
            report["rows"].append(
                {
                    "what": "forward",
                    "weights_dtype": weights_dtype,
                    "sigmas": "per-frame" if per_frame else "scalar",
                    "seconds": seconds,
                    "mfu": mfu,
                    "peak_bytes": _peak(device),
                    "projected_bytes": projected_peak(size, weights_dtype, False),
                }
            )
        trainable = inject_lora(model, size.lora_rank)
        optimizer = torch.optim.AdamW(trainable, lr=1e-4)
        batch = inputs(size, device, True)
        _reset_peak(device)
        seconds = timed(
            lambda model=model, optimizer=optimizer, batch=batch: train_step(model, optimizer, batch),
            device,
            size.repeats,
        )
        mfu = (
            None if peak_tflops is None else 4 * flops / seconds / (peak_tflops * 1e12)
        )  # fwd + recompute + bwd
        report["rows"].append(
            {
                "what": f"LoRA r{size.lora_rank} step",
                "weights_dtype": weights_dtype,
                "sigmas": "per-frame",
                "seconds": seconds,
                "mfu": mfu,
                "peak_bytes": _peak(device),
                "projected_bytes": projected_peak(size, weights_dtype, True),
            }
        )
        if weights_dtype == "bfloat16":
            report["dcp_resume"] = dcp_resume_check(size, model, trainable, optimizer, batch)
        del model, optimizer, trainable
    resident = timed(lambda: base.velocity(**inputs(size, device, True)), device, size.repeats)
    offloaded_model = copy.deepcopy(base).to("cpu")
    placement = BlockOffload(offloaded_model, device)
    with placement.active(), torch.no_grad():
        offloaded = timed(
            lambda: offloaded_model.velocity(**inputs(size, device, True)), device, size.repeats
        )
    report["block_offload"] = {
        "resident_s": resident,
        "offloaded_s": offloaded,
        "overhead": offloaded / resident - 1,
    }
    return report


def print_report(report: dict[str, Any]) -> None:
    print(
        f"{report['device']}: {report['blocks']} blocks, L = {report['tokens']}, "
        f"{report['forward_tflop']:.1f} TFLOP per forward, bf16 peak {report['bf16_peak_tflops']} TFLOP/s"
    )
    print(f"{'what':<18}{'weights':<15}{'sigmas':<11}{'s':>9}{'MFU':>7}{'peak GiB':>10}{'projected':>11}")
    for row in report["rows"]:
        mfu = "-" if row["mfu"] is None else f"{100 * row['mfu']:.0f}%"
        peak = "-" if row["peak_bytes"] is None else f"{row['peak_bytes'] / 2**30:.1f}"
        projected = "-" if row["projected_bytes"] is None else f"{row['projected_bytes'] / 2**30:.1f}"
        print(
            f"{row['what']:<18}{row['weights_dtype']:<15}{row['sigmas']:<11}{row['seconds']:>9.3f}{mfu:>7}"
            f"{peak:>10}{projected:>11}"
        )
    offload = report["block_offload"]
    print(
        f"block offload (prefetch): {offload['offloaded_s']:.3f} s vs resident {offload['resident_s']:.3f} s "
        f"({100 * offload['overhead']:+.0f}%)"
    )
    resume = report["dcp_resume"]
    print(
        f"DCP save {resume['save_s']:.2f} s, load {resume['load_s']:.2f} s; next step after resume "
        f"{'equal' if resume['exact'] else 'DIFFERENT'} ({resume['loss']:.6g} / {resume['resumed_loss']:.6g})"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the same code on the CPU at a tiny size")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if args.dry_run:
        size, device = TINY, torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA device here; use --dry-run for the CPU rehearsal")
        size, device = FULL, torch.device("cuda")
    report = run(size, device)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
