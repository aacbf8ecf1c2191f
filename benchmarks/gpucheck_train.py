"""Parts 4-5 of `gpu_check.py`: the LoRA step as the trainer runs it, and the memory options together.

The step is the trainer's own: `pusa_fw_train.lora.inject_lora` (fp32 factors on a frozen base stored in
bf16 or fp8 and computed in fp32), gradient checkpointing, and `pusa_fw_train.step.frame_loss_terms`
(``fafm_forward`` under ``torch.autocast(bf16)``, as ``precision = "bf16"``) with the trainer's masked frame
mean, backward, AdamW. Estimates at the 14B width, 4 blocks, L = 32,760: a step is forward + recompute +
backward = 4 x 168 = 672 TFLOP of base + 4 x 13 TFLOP of rank-512 LoRA, ~1.5-2.5 s; part 4 makes 2 storages
x 4 steps (~20 s) + meta projections (~10 s); part 5 makes 1 resident + 3 swapped steps with token chunks
(+~30 % recompute) and host copies (~15 s) + a projection (~5 s).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from gpucheck_common import (
    TARGETS, Report, Size, forward_flops, gib, lora_forward_flops, peak_above, peak_tflops, random_model,
    timed,
)
from gpucheck_projection import frozen_block_bytes, projected_training

TRAIN_MFU_FLOOR = 0.25  # checkpointed step, LoRA FLOPs included (flash backward is slower than forward)
TRAIN_PEAK_BAND = (0.8, 1.25)  # measured / projected; bench_memory runs its blocks without autocast


def lora_model(size: Size, device: torch.device, weights_dtype: str,
               token_chunks: int = 1) -> torch.nn.Module:
    """The trainer's LoRA model: fp32 compute, base stored in `weights_dtype`, fp32 factors (B random so
    gradients reach A), checkpointing, train mode."""
    from pusa_fw_train.lora import inject_lora

    model = random_model(size, device, torch.float32, weights_dtype)
    torch.manual_seed(0)
    inject_lora(model, TARGETS, size.lora_rank, float(size.lora_rank))
    with torch.no_grad():
        generator = torch.Generator(device=device).manual_seed(3)
        for name, parameter in model.named_parameters():
            if parameter.requires_grad and "lora_B" in name:
                parameter.normal_(0.0, 1e-3, generator=generator)
    model.enable_gradient_checkpointing(True, token_chunks=token_chunks)
    return model.train()


def trainer_batch(size: Size, device: torch.device) -> tuple[Any, Any]:
    """One sample as the trainer collates and draws it: `Batch` and `StepDraws` (per-frame sigmas)."""
    from pusa_fw_train.step import Batch, StepDraws

    frames, height, width = size.grid
    generator = torch.Generator().manual_seed(4)
    latents = torch.randn(1, 16, frames, 2 * height, 2 * width, generator=generator)
    context = torch.randn(1, size.text_rows, size.config.text_dim, generator=generator)
    sigmas = torch.rand(1, frames, generator=generator).clamp(0.02, 0.98)
    eps = torch.randn(latents.shape, generator=generator)
    batch = Batch(latents=latents.to(device), context=context.to(device), indices=(0,), captions=("",))
    mask = torch.ones(1, frames, dtype=torch.bool, device=device)
    draws = StepDraws(sigmas=sigmas.to(device), eps=eps.to(device), loss_mask=mask)
    return batch, draws


def loss_and_backward(model: torch.nn.Module, batch: Any, draws: Any) -> torch.Tensor:
    """The trainer's micro-step: `frame_loss_terms` under bf16 autocast, masked frame mean, backward."""
    from pusa_fw.fafm import masked_frame_mean
    from pusa_fw_train.step import frame_loss_terms

    terms, _ = frame_loss_terms(model, batch, draws, autocast_dtype=torch.bfloat16)
    loss = masked_frame_mean(terms, None, draws.loss_mask)
    loss.backward()
    return loss.detach()


@contextlib.contextmanager
def lora_output_dtypes(model: torch.nn.Module) -> Iterator[set[torch.dtype]]:
    """Dtypes of the first LoRA-wrapped linear's outputs while the body runs (bf16 under the autocast)."""
    seen: set[torch.dtype] = set()
    layer = next(module for name, module in model.named_modules() if name.endswith("self_attn.q"))
    handle = layer.register_forward_hook(lambda _m, _i, output: seen.add(output.dtype))
    try:
        yield seen
    finally:
        handle.remove()


def lora_step_part(report: Report) -> None:
    """For a bf16 and an fp8 base: the trainer's step, its dtype, time, MFU (with / without LoRA FLOPs) and
    its forward + backward peak against the projection."""
    part, device, size = "LoRA step (trainer)", report.device, report.size
    # forward + recomputation + a backward of twice the forward
    base = 4 * forward_flops(size.config, size.tokens, size.config.text_len)
    lora = 4 * lora_forward_flops(size.config, size.tokens, size.lora_rank)
    for storage in ("bfloat16", "float8_e4m3fn"):
        model = lora_model(size, device, storage)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-4)
        batch, draws = trainer_batch(size, device)
        losses: list[torch.Tensor] = []

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss_and_backward(model, batch, draws))
            optimizer.step()

        with lora_output_dtypes(model) as dtypes:
            step()  # creates the AdamW state: the peak below is the steady state's
        grads_nonzero = all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in trainable)
        finite = bool(torch.isfinite(losses[0]))
        report.add(part, f"{storage} base: bf16 autocast, finite loss, LoRA grads",
                   str(sorted(map(str, dtypes))),
                   passed=dtypes == {torch.bfloat16} and finite and grads_nonzero,
                   detail=f"loss {float(losses[0]):.4g}, every factor has a gradient: {grads_nonzero}")
        seconds = timed(step, device, size.repeats)
        optimizer.zero_grad(set_to_none=True)
        with peak_above(device, 0.0) as peak:
            loss_and_backward(model, batch, draws)
        rate = peak_tflops(device)
        mfu = None if rate is None else (base + lora) / seconds / (rate * 1e12)
        mfu_base = None if rate is None else base / seconds / (rate * 1e12)
        report.add(part, f"{storage} base: step MFU (LoRA FLOPs in)", mfu,
                   passed=mfu is not None and mfu >= TRAIN_MFU_FLOOR,
                   detail=f"{seconds:.3f} s per step, {(base + lora) / 1e12:.0f} TFLOP; base FLOPs only: "
                   + ("-" if mfu_base is None else f"{mfu_base:.1%}"), cuda_only=True)
        projected = projected_training(model, size, storage, "train_ckpt")
        ratio = None if peak.allocated is None else peak.allocated / projected
        report.add(part, f"{storage} base: step peak / projection", ratio,
                   passed=ratio is not None and TRAIN_PEAK_BAND[0] <= ratio <= TRAIN_PEAK_BAND[1], unit="x",
                   detail=f"allocated {gib(peak.allocated)}, reserved {gib(peak.reserved)}, projected "
                   f"{gib(projected)} (train_ckpt, AdamW moments, no EMA)", cuda_only=True)
        del model, optimizer, trainable


_NOT_READS = (torch.ops.aten.detach.default, torch.ops.aten.alias.default, torch.ops.aten.is_pinned.default,
              torch.ops.aten._pin_memory.default)


class MasterReads(TorchDispatchMode):
    """Counts compute ops that read a block swap host master (on CUDA each one is a device-mismatch crash;
    on the CPU the master and its copy share a device, so only this count shows it). The swap's own copies
    (same-dtype ``_to_copy`` / ``copy_``) and view ops are not reads."""

    def __init__(self, masters: list[torch.Tensor]) -> None:
        super().__init__()
        self.storages = {tensor.untyped_storage().data_ptr() for tensor in masters}
        self.reads: dict[str, int] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tensors = [value for value in tree_flatten((args, kwargs))[0] if isinstance(value, torch.Tensor)]
        outputs = [value for value in tree_flatten(out)[0] if isinstance(value, torch.Tensor)]
        copy_like = func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default)
        same_dtype = bool(outputs) and all(o.dtype == tensors[0].dtype for o in outputs) if tensors else True
        viewish = func.is_view or func in _NOT_READS
        if not viewish and not (copy_like and same_dtype):
            for tensor in tensors:
                if tensor.device.type == "cpu" and tensor.untyped_storage().data_ptr() in self.storages:
                    name = str(func)
                    self.reads[name] = self.reads.get(name, 0) + 1
        return out


def swap_masters(swap: Any) -> list[torch.Tensor] | None:
    """The host masters of a `BlockSwap` (``blocks[i].masters``), or None if this version has none."""
    blocks = getattr(swap, "blocks", None)
    if blocks is None:
        return None
    masters = [getattr(block, "masters", None) for block in blocks]
    return None if any(m is None for m in masters) else [t for group in masters for t in group]


def memory_options_part(report: Report) -> None:
    """fp8 base, LoRA, checkpointing + token chunks: resident, then with `BlockSwap` + `ActivationOffload`
    added (the README's 14B recipe): it must run (no host master read: the F1 crash), give the same loss
    and gradients bit for bit, and its peak must match the projection like for like."""
    from pusa_fw_train.activation_offload import ActivationOffload
    from pusa_fw_train.block_swap import BlockSwap

    part, device, size = "swap + chunks + offload", report.device, report.size
    storage, chunks = "float8_e4m3fn", size.token_chunks
    model = lora_model(size, device, storage, token_chunks=chunks)
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    batch, draws = trainer_batch(size, device)
    resident_loss = loss_and_backward(model, batch, draws)
    # on the host: a device copy of the gradients would sit in the peak below and not in its projection
    resident_grads = {name: p.grad.detach().cpu() for name, p in trainable.items()}

    def step() -> torch.Tensor:
        for parameter in trainable.values():
            parameter.grad = None
        return loss_and_backward(model, batch, draws)

    resident_s = timed(step, device, size.repeats)
    for parameter in trainable.values():
        parameter.grad = None
    swap = BlockSwap(model, size.swapped, device)
    offload = ActivationOffload(model, device)
    masters = swap_masters(swap)
    watcher = MasterReads(masters or [])
    with peak_above(device, 0.0) as peak, watcher:
        swapped_loss = loss_and_backward(model, batch, draws)
    reads = sum(watcher.reads.values())
    report.add(part, "no compute reads a host master (F1)", reads if masters is not None else None,
               passed=masters is not None and reads == 0,
               detail=(", ".join(f"{k} x{v}" for k, v in sorted(watcher.reads.items()))[:200] or "none")
               if masters is not None else "BlockSwap.blocks[i].masters unavailable in this version")
    same = bool(torch.equal(swapped_loss, resident_loss)) and all(
        torch.equal(p.grad.cpu(), resident_grads[name]) for name, p in trainable.items())
    report.add(part, "loss and LoRA grads == resident (bit)", same, passed=same,
               detail=f"loss {float(swapped_loss):.6g} vs {float(resident_loss):.6g}")
    block_bytes = frozen_block_bytes(model.blocks[0])
    live = getattr(swap, "peak_live_bytes", None)
    report.add(part, "swapped block copies alive at once", None if live is None else live / block_bytes,
               passed=live is not None and live <= 2 * block_bytes, unit="blocks",
               detail=f"BlockSwap.peak_live_bytes {live}, one block {block_bytes} B")
    swapped_s = timed(step, device, size.repeats)
    report.add(part, "step time with swap + offload / resident", swapped_s / resident_s, unit="x",
               detail=f"{swapped_s:.3f} s / {resident_s:.3f} s", cuda_only=True)
    projected = projected_training(model, size, storage, "train_ckpt_offload", swapped=size.swapped,
                                   token_chunks=chunks, adamw=False)
    ratio = None if peak.allocated is None else peak.allocated / projected
    report.add(part, "peak / projection (ckpt + offload + chunks, swap)", ratio,
               passed=ratio is not None and TRAIN_PEAK_BAND[0] <= ratio <= TRAIN_PEAK_BAND[1], unit="x",
               detail=f"allocated {gib(peak.allocated)}, reserved {gib(peak.reserved)}, projected "
               f"{gib(projected)}", cuda_only=True)
    pinned = getattr(swap, "pinned_bytes", None)
    host = swap.host_bytes() if hasattr(swap, "host_bytes") else None
    report.add(part, "pinned host bytes: swap, offload peak", pinned,
               detail=f"swap host {host}, pinned {pinned if pinned is not None else 'unavailable'}, offload "
               f"peak host {getattr(offload, 'peak_host_bytes', None)}", cuda_only=True)
    offload.detach()
