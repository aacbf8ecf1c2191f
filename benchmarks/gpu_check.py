"""One script that proves the GPU path: 4 real 14B-width Wan blocks at 480p x 81 tokens, no weights needed.

    python benchmarks/gpu_check.py [--json PATH]          # one GPU (H100: ~3 min, < 8 min by its budget)
    python benchmarks/gpu_check.py --device cpu --tiny    # every check's code on the CPU at a tiny width
    python benchmarks/gpu_check.py --dry-run              # print the plan only

It builds random `WanDiT` blocks (dim 5120, 40 heads, ffn 13824, text dim 4096; L = 21 x 30 x 52 = 32,760
tokens) and runs seven parts, each timed, each in its own try/except so one failure does not hide the rest:

1. env: torch / CUDA / cuDNN, device, SDPA switches, ``PYTORCH_CUDA_ALLOC_CONF`` (set to
   ``expandable_segments:True`` unless given, so reserved memory is not dominated by fragmentation);
2. bf16 forward: the SDPA backend (aten op) and kernel it reaches (profiler), all-equal per-frame sigmas
   == scalar bit for bit, per-frame vs scalar time (<= 1.02x), flash- and cuDNN-forced forwards, MFU,
   device peak against `bench_memory`'s projection;
3. fp8 storage: cosine against bf16, time, peak; a merged rank-512 LoRA on it (``--lora``'s path): time;
4. the trainer's LoRA r512 step (its `frame_loss_terms` under bf16 autocast, checkpointing, AdamW) on a bf16
   and an fp8 base: dtype, MFU with / without LoRA FLOPs, peak against the projection;
5. block swap + token chunks + activation offload together (the README's 14B recipe): no host master read
   (the F1 crash), loss and gradients equal to resident, peak like for like with the projection;
6. NCCL world size 1 + FSDP2 (`shard_dit`, MixedPrecisionPolicy bf16 / fp32) + DCP save and resume through
   the trainer's `save_sharded` / `load_sharded`: AdamW state, 2 more steps, a control with a lost state;
7. inference block offload at 32k and 8k tokens: equality, blocks resident, peaks, time, pinned bytes.

It prints a table (part, check, status, value, detail, whether a CPU run can give the line) and writes the
JSON after every line (``--json``, default ``gpu_check.json``). Exit status 1 when a line FAILs or ERRORs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from gpucheck_common import FULL, NEEDS_CUDA, TINY, Report, run_part  # noqa: E402

DEFAULT_BUDGET_S = 450.0  # the 8 minutes less start-up and slack
# (part, estimate at the 14B width on an H100 in seconds, checks a CPU run cannot give); the estimates come
# from the FLOP counts in each part's module docstring.
PLAN: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    ("env", 5, ("device",)),
    ("forward bf16", 20, ("SDPA kernel", "per-frame / scalar sigmas time", "forward MFU",
                          "forward peak / projection", "cuDNN-forced forward")),
    ("fp8 storage", 20, ("fp8 / bf16 forward time", "fp8 forward peak / projection",
                         "fp8 + LoRA / fp8 forward time")),
    ("LoRA step (trainer)", 40, ("step MFU (LoRA FLOPs in)", "step peak / projection")),
    ("swap + chunks + offload", 25, ("step time with swap + offload / resident",
                                     "peak / projection (ckpt + offload + chunks, swap)",
                                     "pinned host bytes")),
    ("NCCL + FSDP2 + DCP", 40, ("process group backend nccl",)),
    ("block offload (inference)", 15, ("pinned host bytes / block weights", "offload peak in blocks",
                                       "offloaded / resident time")),
)


def parts() -> dict[str, Any]:
    from gpucheck_dist import fsdp_dcp_part
    from gpucheck_forward import env_part, forward_part, fp8_part
    from gpucheck_offload import offload_part
    from gpucheck_train import lora_step_part, memory_options_part

    functions = (env_part, forward_part, fp8_part, lora_step_part, memory_options_part, fsdp_dcp_part,
                 offload_part)
    return {name: function for (name, _, _), function in zip(PLAN, functions, strict=True)}


def print_plan(size_name: str, device: str) -> None:
    print(f"gpu_check plan ({size_name}, {device}); ~{sum(e for _, e, _ in PLAN):.0f} s of parts at the 14B "
          f"width on an H100, budget {DEFAULT_BUDGET_S:.0f} s")
    for index, (name, estimate, cuda_only) in enumerate(PLAN, start=1):
        print(f"{index}. {name:<27} ~{estimate:>3.0f} s   needs CUDA: {', '.join(cuda_only)}")


def print_table(report: Report) -> None:
    print(f"gpu_check: {report.size.name}, {report.size.config.num_layers} blocks, L = {report.size.tokens}, "
          f"on {report.env.get('device_name', report.device)}")
    header = f"{'part':<26}{'check':<62}{'status':<11}{'value':>14}  {'CPU run':<11}detail"
    print(header)
    print("-" * len(header))
    for line in report.lines:
        value = line.value
        shown = "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
        shown += f" {line.unit}" if value is not None and line.unit else ""
        print(f"{line.part:<26}{line.check:<62}{line.status:<11}{shown:>14}  {line.cpu:<11}"
              f"{line.detail}")
    seconds = ", ".join(f"{name} {info.get('seconds', 0):.1f} s" for name, info in report.parts.items())
    print(f"parts: {seconds}")


def main(argv: list[str] | None = None) -> Report | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny width and token count (the CPU rehearsal)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--json", type=Path, default=Path("gpu_check.json"),
                        help="report file (rewritten after every line)")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help="skip a part whose estimate no longer fits (full size only)")
    parser.add_argument("--parts", help="comma-separated part numbers to run (default: all)")
    args = parser.parse_args(argv)
    size = TINY if args.tiny else FULL
    if args.dry_run:
        print_plan(size.name, args.device)
        return None
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"--device {args.device!r} is not a torch device; use cuda, cuda:N or cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device} but torch.cuda.is_available() is False (torch "
                     f"{torch.__version__}, CUDA build {torch.version.cuda}); run `--device cpu --tiny` "
                     "for the CPU rehearsal or `--dry-run` for the plan")
    if device.type == "cpu" and not args.tiny:
        parser.error("--device cpu at the 14B width would take hours; add --tiny")
    if device.type not in ("cuda", "cpu"):
        parser.error(f"--device {args.device}: only cuda and cpu are checked")
    if device.type == "cuda":
        # before the first allocation: reserved memory then is not dominated by fragmentation
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
        device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
    chosen = range(1, len(PLAN) + 1)
    if args.parts is not None:
        chosen = sorted({int(number) for number in args.parts.split(",")})
    report = Report(device, size, args.json)
    budget_end = time.monotonic() + args.budget_s if not args.tiny else None
    functions = parts()
    for number in chosen:
        name, estimate, _ = PLAN[number - 1]
        run_part(report, name, estimate, budget_end, lambda name=name: functions[name](report))
    report.save()
    print_table(report)
    if not report.on_cuda:
        cannot = sorted({f"{line.part}: {line.check}" for line in report.lines if line.status == NEEDS_CUDA})
        print(f"a CPU run cannot give {len(cannot)} lines (marked '{NEEDS_CUDA}'): run it on a GPU for them")
    return report


if __name__ == "__main__":
    result = main()
    sys.exit(0 if result is None or result.as_dict()["ok"] else 1)
