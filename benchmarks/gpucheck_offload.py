"""Part 7 of `gpu_check.py`: inference block offload (`BlockOffload`) against resident weights.

At two token counts (480p x 81 = 32,760, compute-bound; 8,190, where copying a 0.7 GB bf16 block at
~25-50 GB/s is as long as its compute) it checks that the offloaded forward equals the resident one bit for
bit, how many blocks the offload has on the device at once (its own bookkeeping, each block pre-hook), the
allocated and reserved peaks above the resident forward's in blocks (the CPU running ahead of the GPU keeps
freed copies unreusable: the review's ~(lead + 2) blocks), the time overhead, and the pinned host bytes.
Estimate at the 14B width: 4 + 4 forwards at 32k (~3 s), 8 at 8k (~1 s), pinning 2.9 GB (~3 s): ~15 s.
"""

from __future__ import annotations

import copy

import torch

from gpucheck_common import Report, gib, inputs, peak_above, random_model, timed
from gpucheck_projection import block_bytes

# blocks above the resident forward's peak: at most 3 in use on CUDA by design (finishing, running, next:
# `BlockOffload.peak_blocks_in_use`), + allocator rounding
OFFLOAD_BLOCK_LIMIT = 3.25
OFFLOAD_TIME_LIMIT = 1.10  # at 32k tokens the copies hide under the compute


def pinned_host_bytes(placement: object) -> tuple[float | None, str]:
    """Pinned bytes: the placement's own ``pinned_bytes`` if it has one, else the CUDA caching host
    allocator's current allocation (which `pin_memory()` tensors come from), else None."""
    own = getattr(placement, "pinned_bytes", None)
    if own is not None:
        return float(own() if callable(own) else own), "BlockOffload.pinned_bytes"
    stats = getattr(torch.cuda, "host_memory_stats", None)
    if stats is not None and torch.cuda.is_available():
        value = stats().get("allocated_bytes.current")
        if value is not None:
            return float(value), "torch.cuda.host_memory_stats"
    return None, "unavailable"


def offload_part(report: Report) -> None:
    """Resident vs block-offloaded forward at the size's grid and its small grid."""
    from pusa_fw_wan.pipeline.offload import BlockOffload

    part, device, size = "block offload (inference)", report.device, report.size
    with torch.no_grad():
        resident = random_model(size, device, torch.bfloat16, "bfloat16")
        offloaded = copy.deepcopy(resident).to("cpu")
        placement = BlockOffload(offloaded, device)
        one_block = block_bytes(offloaded)
        masters = sum(t.numel() * t.element_size() for r in placement.blocks for t in r.tensors)
        pinned, source = pinned_host_bytes(placement)
        report.add(part, "pinned host bytes / block weights", None if pinned is None else pinned / masters,
                   unit="x", detail=f"{gib(pinned)} pinned ({source}) for {gib(masters)} of blocks",
                   cuda_only=True)
        resident_on_device: list[int] = []

        def count(_module: torch.nn.Module, _inputs: object) -> None:
            resident_on_device.append(sum(bool(getattr(r, "on_device", False)) for r in placement.blocks))

        handles = [block.register_forward_pre_hook(count) for block in offloaded.blocks]
        for grid in (size.grid, size.small_grid):
            label = f"L = {grid[0] * grid[1] * grid[2]}"
            batch = inputs(size, device, grid=grid)
            with peak_above(device) as resident_peak:  # above the weights: the activations
                resident_s = timed(lambda batch=batch: resident.velocity(**batch), device, size.repeats)
            want = resident.velocity(**batch)
            resident_on_device.clear()
            with placement.active():
                with peak_above(device) as peak:  # above the non-block weights: activations + block copies
                    offload_s = timed(lambda batch=batch: offloaded.velocity(**batch), device, size.repeats)
                got = offloaded.velocity(**batch)
            same = bool(torch.equal(got, want))
            report.add(part, f"{label}: offloaded == resident (bit)", same, passed=same)
            most = max(resident_on_device, default=0)
            report.add(part, f"{label}: blocks on the device at a block start (bookkeeping)", most,
                       passed=0 < most <= 2, unit="blocks")
            in_use = getattr(placement, "peak_blocks_in_use", None)
            report.add(part, f"{label}: peak blocks in use (BlockOffload's count)", in_use,
                       passed=None if in_use is None else 0 < in_use <= (3 if report.on_cuda else 2),
                       unit="blocks", detail="" if in_use is not None else "unavailable in this version")
            extra = reserved = None
            if peak.allocated is not None and resident_peak.allocated is not None:
                extra = (peak.allocated - resident_peak.allocated) / one_block
                reserved = (peak.reserved - resident_peak.reserved) / one_block
            report.add(part, f"{label}: offload peak in blocks (allocated)", extra,
                       passed=extra is not None and extra <= OFFLOAD_BLOCK_LIMIT, unit="blocks",
                       detail=f"above the resident forward's: allocated {gib(peak.allocated)} vs "
                       f"{gib(resident_peak.allocated)}; reserved in blocks "
                       + ("-" if reserved is None else f"{reserved:.2f}"), cuda_only=True)
            ratio = offload_s / resident_s
            compute_bound = grid == size.grid
            report.add(part, f"{label}: offloaded / resident time", ratio,
                       passed=ratio <= OFFLOAD_TIME_LIMIT if compute_bound else None, unit="x",
                       detail=f"{offload_s:.3f} s / {resident_s:.3f} s"
                       + (f", limit {OFFLOAD_TIME_LIMIT}" if compute_bound else ", copy-bound: information"),
                       cuda_only=True)
        for handle in handles:
            handle.remove()
