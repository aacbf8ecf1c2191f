"""Parts 1-3 of `gpu_check.py`: the environment, the bf16 forward (SDPA backend, sigmas, MFU, peak) and fp8.

Estimates at the 14B width, 4 blocks, L = 32,760 (H100, bf16 dense 989 TFLOP/s): one forward is 4 x
(12 L d^2 + 4 L d f + 4 L^2 d) = 168 TFLOP, ~0.35-0.4 s at 45 % MFU. The forward part makes ~16 forwards
(warm-ups, 3 timed each for per-frame and scalar sigmas, the all-equal one, a profiled one, flash- and
cuDNN-forced with their warm-ups): ~7 s, + ~3 s model build + ~5 s of meta-device projection = ~20 s.
The fp8 part makes ~10 forwards, writes and applies a rank-512 LoRA (245 M parameters, 0.5 GB bf16): ~20 s.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from gpucheck_common import (
    Report, cosine, forward_flops, gib, inputs, peak_above, peak_tflops, random_model, relative_error, timed,
)
from gpucheck_projection import projected_inference

SIGMA_RATIO_LIMIT = 1.02  # per-frame sigmas cost the same blocks as a scalar: only the time MLP differs
MFU_FLOOR = 0.30  # FA2 forward ~350-400 TFLOP/s, GEMMs ~650-750: 40-48 % expected; < 30 % is a fallback
PEAK_BAND = (0.85, 1.15)  # measured / projected device peak of a forward
BACKEND_REL_ERROR = 2e-2  # SDPA backends differ by bf16 roundings: ||a - b|| / ||b|| of the 4-block output
FP8_COSINE_FLOOR = 0.995  # per-tensor e4m3 scale: a few % relative error per weight
FP8_TIME_LIMIT = 1.10  # fp8 storage dequantises each weight once per forward (~1 % at 14B)
FP8_LORA_TIME_LIMIT = 1.20  # merged rank-512 deltas rebuilt per forward (review: ~12 % of a 14B forward)


def env_part(report: Report) -> None:
    """Versions, device, SDPA switches, allocator settings (all INFO)."""
    device = report.device
    env: dict[str, Any] = {
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "flash_sdp_enabled": torch.backends.cuda.flash_sdp_enabled(),
        "cudnn_sdp_enabled": torch.backends.cuda.cudnn_sdp_enabled(),
        "mem_efficient_sdp_enabled": torch.backends.cuda.mem_efficient_sdp_enabled(),
        "math_sdp_enabled": torch.backends.cuda.math_sdp_enabled(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "PYTORCH_CUDA_ALLOC_CONF": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
    }
    if report.on_cuda:
        free, total = torch.cuda.mem_get_info(device)
        env.update(device_name=torch.cuda.get_device_name(device), free_bytes=free, total_bytes=total,
                   capability=torch.cuda.get_device_capability(device))
    report.env.update(env)
    report.add("env", "torch / CUDA / cuDNN", f"{env['torch']} / {env['cuda']} / {env['cudnn']}")
    report.add("env", "device", env.get("device_name", str(device)),
               detail=f"{gib(env.get('free_bytes'))} free" if report.on_cuda else "", cuda_only=True)
    report.add("env", "SDPA flash / cuDNN / efficient / math enabled",
               f"{env['flash_sdp_enabled']} / {env['cudnn_sdp_enabled']} / {env['mem_efficient_sdp_enabled']}"
               f" / {env['math_sdp_enabled']}")
    report.add("env", "PYTORCH_CUDA_ALLOC_CONF", env["PYTORCH_CUDA_ALLOC_CONF"])


def sdpa_trace(function: Any, device: torch.device) -> tuple[list[str], list[str]]:
    """The SDPA aten ops and the attention kernels one call of `function` ran (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as trace:
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    ops, kernels = set(), set()
    for event in trace.events():
        name = event.name
        if name.startswith("aten::_scaled_dot_product") or name.startswith("aten::_flash_attention"):
            ops.add(name)
        elif event.device_type == torch.autograd.DeviceType.CUDA and any(
            word in name.lower() for word in ("flash", "fmha", "cudnn", "sdpa", "attention", "cutlass")
        ):
            kernels.add(name)
    return sorted(ops), sorted(kernels)


def backend_of(names: list[str]) -> str:
    """``flash``, ``cudnn``, ``efficient`` or ``math`` from SDPA op / kernel names."""
    text = " ".join(names).lower()
    if "cudnn" in text:
        return "cudnn"
    if "flash" in text:
        return "flash"
    if "efficient" in text or "cutlassf" in text:
        return "efficient"
    return "math"


def forward_part(report: Report) -> None:
    """bf16 forward: SDPA backend and kernel, forced flash / cuDNN, sigma kinds, MFU, peak vs projection."""
    part, device, size = "forward bf16", report.device, report.size
    floor = 0.0
    model = random_model(size, device, torch.bfloat16, "bfloat16")
    batches = {kind: inputs(size, device, kind) for kind in ("per-frame", "scalar", "equal")}

    def forward(kind: str = "per-frame") -> torch.Tensor:
        return model.velocity(**batches[kind])

    with torch.no_grad():
        default = forward()
        ops, kernels = sdpa_trace(forward, device)
        backend = backend_of(ops)
        report.add(part, "SDPA backend (aten op)", backend, passed=backend in ("flash", "cudnn"),
                   detail=", ".join(ops))
        report.add(part, "SDPA kernel", backend_of(kernels) if kernels else None,
                   passed=bool(kernels) and backend_of(kernels) in ("flash", "cudnn"),
                   detail="; ".join(kernels)[:200], cuda_only=True)
        equal, scalar = forward("equal"), forward("scalar")
        report.add(part, "all-equal per-frame == scalar sigmas (bit)", bool(torch.equal(equal, scalar)),
                   passed=bool(torch.equal(equal, scalar)))
        with peak_above(device, floor) as peak:
            seconds = {kind: timed(lambda kind=kind: forward(kind), device, size.repeats)
                       for kind in ("per-frame", "scalar")}
        ratio = seconds["per-frame"] / seconds["scalar"]
        report.add(part, "per-frame / scalar sigmas time", ratio, passed=ratio <= SIGMA_RATIO_LIMIT,
                   unit="x", detail=f"{seconds['per-frame']:.3f} s / {seconds['scalar']:.3f} s, "
                   f"limit {SIGMA_RATIO_LIMIT}", cuda_only=True)
        flops, peak_rate = forward_flops(size.config, size.tokens, size.config.text_len), peak_tflops(device)
        mfu = None if peak_rate is None else flops / seconds["per-frame"] / (peak_rate * 1e12)
        report.add(part, "forward MFU", mfu, passed=mfu is not None and mfu >= MFU_FLOOR,
                   detail=f"{flops / 1e12:.1f} TFLOP in {seconds['per-frame']:.3f} s, peak "
                   f"{peak_rate} TFLOP/s, floor {MFU_FLOOR:.0%}", cuda_only=True)
        projected = projected_inference(model, size, "bfloat16")
        ratio = None if peak.allocated is None else peak.allocated / projected
        report.add(part, "forward peak / projection", ratio,
                   passed=ratio is not None and PEAK_BAND[0] <= ratio <= PEAK_BAND[1], unit="x",
                   detail=f"allocated {gib(peak.allocated)}, reserved {gib(peak.reserved)}, projected "
                   f"{gib(projected)}", cuda_only=True)
        forced_part(report, forward, default, seconds["per-frame"])


def forced_part(report: Report, forward: Any, default: torch.Tensor, default_s: float) -> None:
    """One forward with SDPA restricted to flash, one to cuDNN: they must run and match the default."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    part, device = "forward bf16", report.device
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("cuDNN", SDPBackend.CUDNN_ATTENTION)):
        cuda_only = name == "cuDNN"  # the CPU has a flash SDPA kernel but no cuDNN one
        if cuda_only and not report.on_cuda:
            report.add(part, f"{name}-forced forward", None, cuda_only=True, detail="no cuDNN SDPA on CPU")
            continue
        with sdpa_kernel([backend]):
            seconds = timed(forward, device, report.size.repeats)
            error = relative_error(forward().float(), default.float())
        report.add(part, f"{name}-forced forward", error, passed=error <= BACKEND_REL_ERROR,
                   detail=f"rel. error vs default {error:.1e} (<= {BACKEND_REL_ERROR}), {seconds:.3f} s vs "
                   f"default {default_s:.3f} s", cuda_only=cuda_only)


def fp8_part(report: Report) -> None:
    """fp8 (e4m3fn) storage against bf16: accuracy, time, peak; then a merged rank-r LoRA on it (the
    CLI's ``--lora`` path, `apply_loras(merge=True)`): time and that it changes the output."""
    part, device, size = "fp8 storage", report.device, report.size
    with torch.no_grad():
        bf16 = random_model(size, device, torch.bfloat16, "bfloat16")
        batch = inputs(size, device)
        reference = bf16.velocity(**batch).float()
        bf16_s = timed(lambda: bf16.velocity(**batch), device, size.repeats)
        del bf16
        model = random_model(size, device, torch.bfloat16, "float8_e4m3fn")
        with peak_above(device, 0.0) as peak:
            fp8_s = timed(lambda: model.velocity(**batch), device, size.repeats)
        output = model.velocity(**batch).float()
        similarity, error = cosine(output, reference), relative_error(output, reference)
        report.add(part, "fp8 vs bf16 output cosine", similarity, passed=similarity >= FP8_COSINE_FLOOR,
                   detail=f"rel. error {error:.3f}, floor {FP8_COSINE_FLOOR}")
        report.add(part, "fp8 / bf16 forward time", fp8_s / bf16_s, passed=fp8_s / bf16_s <= FP8_TIME_LIMIT,
                   unit="x", detail=f"{fp8_s:.3f} s / {bf16_s:.3f} s, limit {FP8_TIME_LIMIT}", cuda_only=True)
        projected = projected_inference(model, size, "float8_e4m3fn")
        ratio = None if peak.allocated is None else peak.allocated / projected
        report.add(part, "fp8 forward peak / projection", ratio,
                   passed=ratio is not None and PEAK_BAND[0] <= ratio <= PEAK_BAND[1], unit="x",
                   detail=f"allocated {gib(peak.allocated)}, projected {gib(projected)}", cuda_only=True)
        with tempfile.TemporaryDirectory(prefix="gpu_check_lora_") as folder:
            apply_random_lora(model, size.lora_rank, Path(folder) / "random_lora.safetensors")
        lora_s = timed(lambda: model.velocity(**batch), device, size.repeats)
        changed = relative_error(model.velocity(**batch).float(), output)
        report.add(part, "fp8 + merged LoRA changes the output", changed, passed=changed > 0,
                   detail=f"rank {size.lora_rank}, rel. change vs fp8 without LoRA")
        report.add(part, "fp8 + LoRA / fp8 forward time", lora_s / fp8_s,
                   passed=lora_s / fp8_s <= FP8_LORA_TIME_LIMIT, unit="x",
                   detail=f"rank {size.lora_rank} merged: {lora_s:.3f} s / {fp8_s:.3f} s, "
                   f"limit {FP8_LORA_TIME_LIMIT}",
                   cuda_only=True)


def apply_random_lora(model: torch.nn.Module, rank: int, path: Path) -> None:
    """Write a random PEFT-format LoRA on Pusa's targets (bf16, A ~ N(0, 1/in), B ~ N(0, 1e-3)) and apply
    it merged through `pusa_fw_wan.lora.apply.apply_loras`, as ``pusa-fw generate --lora`` does."""
    from safetensors.torch import save_file

    from pusa_fw_train.lora import resolve_targets
    from pusa_fw_wan.lora.apply import LoraSpec, apply_loras

    modules = dict(model.named_modules())
    generator = torch.Generator().manual_seed(2)
    tensors = {}
    for name in resolve_targets(model, ("q", "k", "v", "o", "ffn.0", "ffn.2")):
        if not name.startswith("blocks."):
            continue
        out_features, in_features = modules[name].weight.shape
        down = torch.randn(rank, in_features, generator=generator) / in_features**0.5
        tensors[f"{name}.lora_A.weight"] = down.to(torch.bfloat16)
        tensors[f"{name}.lora_B.weight"] = (torch.randn(out_features, rank, generator=generator) * 1e-3).to(
            torch.bfloat16)
    save_file(tensors, str(path))
    apply_loras(model, [LoraSpec(path)], merge=True)
