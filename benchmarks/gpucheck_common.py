"""Shared pieces of `gpu_check.py`: sizes, the incremental report, timing, memory windows, random models.

Every check adds one `Line` to a `Report`: a part, a check, a status and its number. A line that only a GPU
can give (a kernel name, an MFU, a device peak, pinned bytes, NCCL) is ``needs CUDA`` on a CPU run, with the
CPU's number (if any) kept for information. The report is written to JSON after every line, so a run that
dies half way still leaves what it measured.
"""

from __future__ import annotations

import contextlib
import gc
import json
import statistics
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from pusa_fw_wan import WanConfig, WanDiT

PASS, FAIL, INFO, NEEDS_CUDA, ERROR, SKIPPED = "PASS", "FAIL", "INFO", "needs CUDA", "ERROR", "SKIPPED"
BAD = (FAIL, ERROR)
TARGETS = ("q", "k", "v", "o", "ffn.0", "ffn.2")  # Pusa's LoRA targets (both attentions + FFN)
# Dense bf16 peaks in TFLOP/s (docs/performance_reference.md), matched on the device name.
BF16_PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "H800": 989.4, "A100": 312.0, "A800": 312.0, "4090": 165.0}


@dataclass(frozen=True)
class Size:
    """What a run builds: the blocks' architecture, the latent token grid and the knobs of each part.

    Attributes:
        config: the DiT (a few real blocks at the width under test).
        grid: latent frames, patches high, patches wide (tokens = their product).
        small_grid: the copy-bound token grid of the block-offload part.
        lora_rank: LoRA rank of the training parts.
        repeats: timed calls after one warm-up.
        token_chunks: ``enable_gradient_checkpointing(token_chunks=...)`` of the memory-options part.
        swapped: blocks kept on the host by `BlockSwap` in the memory-options part.
        text_rows: text-encoder rows of the context (zero-padded to ``text_len`` inside).
    """

    name: str
    config: WanConfig
    grid: tuple[int, int, int]
    small_grid: tuple[int, int, int]
    lora_rank: int
    repeats: int
    token_chunks: int
    swapped: int
    text_rows: int

    @property
    def tokens(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]


# 14B width, 4 real blocks, 480p x 81 frames = 21 x 30 x 52 = 32,760 tokens; offload also at 8,190 tokens.
FULL = Size("14B width", WanConfig(dim=5120, ffn_dim=13824, num_heads=40, text_dim=4096, num_layers=4),
            (21, 30, 52), (21, 15, 26), 512, 3, 7, 2, 128)
TINY = Size("tiny", WanConfig(dim=128, ffn_dim=256, num_heads=2, text_dim=32, text_len=16, num_layers=2),
            (3, 4, 6), (3, 2, 2), 8, 1, 3, 1, 8)


@dataclass
class Line:
    """One row of the table (see the module docstring for the statuses)."""

    part: str
    check: str
    status: str
    value: Any = None
    unit: str = ""
    detail: str = ""
    cpu: str = "yes"  # "yes": a CPU run gives this line; "needs CUDA": only a GPU run does


@dataclass
class Report:
    """The lines so far, the environment and the per-part times; `save` rewrites the JSON file."""

    device: torch.device
    size: Size
    path: Path | None = None
    lines: list[Line] = field(default_factory=list)
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)

    @property
    def on_cuda(self) -> bool:
        return self.device.type == "cuda"

    def add(self, part: str, check: str, value: Any = None, *, passed: bool | None = None, unit: str = "",
            detail: str = "", cuda_only: bool = False) -> Line:
        """Record a check: PASS/FAIL when `passed` is given, INFO otherwise; ``needs CUDA`` off CUDA for
        a `cuda_only` line (its CPU number, if any, is kept as information)."""
        if cuda_only and not self.on_cuda:
            status = NEEDS_CUDA
        elif passed is None:
            status = INFO
        else:
            status = PASS if passed else FAIL
        line = Line(part, check, status, _plain(value), unit, detail, NEEDS_CUDA if cuda_only else "yes")
        self.lines.append(line)
        self.save()
        return line

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": str(self.device), "size": self.size.name, "tokens": self.size.tokens,
            "blocks": self.size.config.num_layers, "env": self.env, "parts": self.parts,
            "lines": [asdict(line) for line in self.lines],
            "ok": not any(line.status in BAD for line in self.lines),
        }

    def save(self) -> None:
        if self.path is not None:
            temporary = self.path.with_suffix(self.path.suffix + ".tmp")
            temporary.write_text(json.dumps(self.as_dict(), indent=2))
            temporary.replace(self.path)


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value


def run_part(report: Report, part: str, estimate_s: float, budget_end: float | None,
             function: Callable[[], None]) -> None:
    """Run one part: skipped when the time budget cannot hold its estimate; an exception becomes an ERROR
    line (the parts after it still run); the part's seconds go to ``report.parts``."""
    if budget_end is not None and time.monotonic() + estimate_s > budget_end:
        report.add(part, "part", detail=f"skipped: its {estimate_s:.0f} s estimate exceeds the budget left")
        report.lines[-1].status = SKIPPED
        report.parts[part] = {"seconds": 0.0, "estimate_s": estimate_s, "skipped": True}
        report.save()
        return
    start = time.monotonic()
    try:
        function()
    except Exception as error:  # noqa: BLE001 - one failure must not hide the other parts
        line = report.add(part, "part raised", passed=False, detail=f"{type(error).__name__}: {error}"[:300])
        line.status = ERROR
        report.parts.setdefault(part, {})["traceback"] = traceback.format_exc()
    finally:
        release(report.device)
    report.parts.setdefault(part, {}).update({"seconds": time.monotonic() - start, "estimate_s": estimate_s})
    report.save()


def release(device: torch.device) -> None:
    """Drop what the last part left (its models go out of scope) and give the cached blocks back."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Median seconds of `function()` after one warm-up call (CUDA events on a GPU: no host timing noise)."""
    function()
    sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            function()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            began = time.perf_counter()
            function()
            times.append(time.perf_counter() - began)
    return statistics.median(times)


@dataclass
class Peak:
    """Device memory of a window above its floor (None off CUDA): `allocated` and `reserved` peaks."""

    allocated: float | None = None
    reserved: float | None = None


@contextlib.contextmanager
def peak_above(device: torch.device, floor: float | None = None) -> Iterator[Peak]:
    """Peaks of the window's allocations above `floor` (default: what is allocated when it starts).

    The caller picks the floor: 0 after `release` measures everything the window's part holds, like the
    projection (weights, LoRA and optimizer state, activations); no other model is on the device then.
    """
    peak = Peak()
    if device.type != "cuda":
        yield peak
        return
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device) if floor is None else floor
    reserved_base = torch.cuda.memory_reserved(device) if floor is None else floor
    yield peak
    sync(device)
    peak.allocated = float(torch.cuda.max_memory_allocated(device) - base)
    peak.reserved = float(torch.cuda.max_memory_reserved(device) - reserved_base)


def allocated(device: torch.device) -> float:
    return float(torch.cuda.memory_allocated(device)) if device.type == "cuda" else 0.0


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((value for key, value in BF16_PEAK_TFLOPS.items() if key in name), None)


def forward_flops(config: WanConfig, tokens: int, text_rows: int | None = None) -> float:
    """FLOPs of one forward of the blocks (2 per multiply-add): 12 L d^2 (q, k, v, o of self-attention and
    q, o of cross-attention) + 4 L d f (FFN) + 4 L^2 d (self-attention) + 4 L T d + 4 T d^2 (cross k, v)."""
    d, f, text = config.dim, config.ffn_dim, config.text_len if text_rows is None else text_rows
    per_block = 12 * tokens * d * d + 4 * tokens * d * f + 4 * tokens * tokens * d
    per_block += 4 * tokens * text * d + 4 * text * d * d
    return float(config.num_layers * per_block)


def lora_forward_flops(config: WanConfig, tokens: int, rank: int) -> float:
    """FLOPs of the LoRA factors of one forward: x A^T B^T on the 8 attention and 2 FFN linears per block
    (cross-attention k, v act on the text rows: counted at `text_len`)."""
    d, f, text = config.dim, config.ffn_dim, config.text_len
    per_block = 6 * 2 * tokens * rank * (d + d) + 2 * 2 * text * rank * (d + d)
    per_block += 2 * tokens * rank * (d + f) * 2
    return float(config.num_layers * per_block)


def random_model(size: Size, device: torch.device, compute: torch.dtype, weights_dtype: str,
                 seed: int = 0) -> WanDiT:
    """Random weights (N(0, 0.02), norms 1) built on meta and materialised on `device`; the large linears
    stored in `weights_dtype`, computing in `compute` (bf16 for inference; fp32 + autocast for training, as
    the trainer builds it)."""
    with torch.device("meta"):
        model = WanDiT(size.config)
    model = model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                parameter.fill_(1.0)
            else:
                parameter.normal_(0.0, 0.02, generator=generator)
    model.set_compute_dtype(compute).set_weights_dtype(weights_dtype)
    return model.eval().requires_grad_(False)


def inputs(size: Size, device: torch.device, sigmas: str = "per-frame",
           grid: tuple[int, int, int] | None = None) -> dict[str, torch.Tensor]:
    """Latents `[1, 16, F, 2h, 2w]`, context `[1, rows, text_dim]` and sigmas: ``per-frame`` `[1, F]`
    distinct, ``equal`` `[1, F]` all 0.5, ``scalar`` `[1]` 0.5."""
    frames, height, width = size.grid if grid is None else grid
    generator = torch.Generator(device=device).manual_seed(1)
    latents = torch.randn(1, 16, frames, 2 * height, 2 * width, device=device, generator=generator)
    context = torch.randn(1, size.text_rows, size.config.text_dim, device=device, generator=generator)
    if sigmas == "per-frame":
        values = torch.linspace(0.1, 0.9, frames, device=device)[None]
    elif sigmas == "equal":
        values = torch.full((1, frames), 0.5, device=device)
    else:
        values = torch.full((1,), 0.5, device=device)
    return {"latents": latents, "sigmas": values, "context": context}


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """``||got - want|| / ||want||`` in float64."""
    got, want = got.double(), want.double()
    return float(torch.linalg.vector_norm(got - want) / torch.linalg.vector_norm(want).clamp_min(1e-30))


def cosine(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.double().flatten(), want.double().flatten()
    return float(torch.nn.functional.cosine_similarity(got, want, dim=0))


def gib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**30:.2f} GiB"
