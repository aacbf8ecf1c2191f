"""Part 6 of `gpu_check.py`: NCCL (gloo on the CPU) at world size 1, FSDP2 with the trainer's mixed
precision, and a DCP save and resume through the trainer's own sharded checkpoint functions.

The trainer never reaches these at world size 1 (`parallel_context` returns early; `fsdp_mixed_precision`
is empty unless distributed), so this part sets them up itself: a process group, a 1-rank `DeviceMesh`,
`shard_dit(param_dtype=bf16, reduce_dtype=fp32)` (what `fsdp_mixed_precision` gives a bf16 run). The
resume is checked where a lost optimizer state would show: the AdamW moments and step right after the load
(exact), and the parameter updates of 2 more steps against the uninterrupted run; a control resumed with
the LoRA factors but a fresh AdamW must then differ (proving the comparison can see it). Estimate at the
14B width (245 M fp32 LoRA parameters, ~3 GB with the moments): NCCL init ~5 s, 8 steps ~20 s, DCP save and
load ~10 s: ~40 s.
"""

from __future__ import annotations

import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from gpucheck_common import Report, relative_error
from gpucheck_train import loss_and_backward, lora_model, trainer_batch

LOSS_REL_TOLERANCE = 2e-2  # FSDP2 casts every parameter (norms and time MLP too) to bf16; the reference
# runs only the autocast's bf16 matmuls
# ||update_a - update_b|| / ||update_a||: room for the nondeterministic flash backward on CUDA; a lost AdamW
# state changes the updates by O(0.1-1)
UPDATE_REL_TOLERANCE = 5e-2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (the tensor itself otherwise), detached."""
    return (tensor.to_local() if hasattr(tensor, "to_local") else tensor).detach()


def optimizer_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """``path.slot`` -> this rank's AdamW state tensor (exp_avg, exp_avg_sq, step)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = get_optimizer_state_dict(model, optimizer)
    return {f"{path}.{slot}": local(value).clone() for path, slots in state["state"].items()
            for slot, value in slots.items() if isinstance(value, torch.Tensor)}


def factors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: local(p).clone() for name, p in model.named_parameters() if p.requires_grad}


def update_difference(start: dict[str, torch.Tensor], got: dict[str, torch.Tensor],
                      want: dict[str, torch.Tensor]) -> float:
    """Relative difference of two runs' parameter updates since `start`."""
    got_update = torch.cat([(got[k] - start[k]).flatten() for k in start])
    want_update = torch.cat([(want[k] - start[k]).flatten() for k in start])
    return relative_error(got_update, want_update)


def fsdp_dcp_part(report: Report) -> None:
    """Process group + FSDP2 + mixed precision step, DCP save / load, resume checks (see module docs)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    part, device, size = "NCCL + FSDP2 + DCP", report.device, report.size
    created = not dist.is_initialized()
    if created:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        backend = dist.get_backend()
        report.add(part, "process group backend nccl, world size 1", f"{backend}, {dist.get_world_size()}",
                   passed=backend == "nccl" and dist.get_world_size() == 1, cuda_only=True)
        mesh = init_device_mesh(device.type, (1,))
        _fsdp_checks(report, part, mesh, size, device)
    finally:
        if created:
            dist.destroy_process_group()


def _sharded(size: Any, device: torch.device, mesh: Any) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    from pusa_fw_wan.parallel.fsdp import shard_dit

    model = shard_dit(lora_model(size, device, "bfloat16"), mesh, param_dtype=torch.bfloat16,
                      reduce_dtype=torch.float32)
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)


def _fsdp_checks(report: Report, part: str, mesh: Any, size: Any, device: torch.device) -> None:
    import torch.distributed.checkpoint as dcp

    from pusa_fw_train.lora import trainable_tensors
    from pusa_fw_train.sharded import SHARDED_DIR, load_sharded, save_sharded

    batch, draws = trainer_batch(size, device)
    plain = lora_model(size, device, "bfloat16")
    reference_loss = float(loss_and_backward(plain, batch, draws))
    del plain
    model, optimizer = _sharded(size, device, mesh)
    seen: set[torch.dtype] = set()
    probe = next(m for name, m in model.named_modules() if name.endswith("self_attn.q.lora_A.trained"))
    handle = probe.register_forward_pre_hook(lambda module, _inputs: seen.add(module.weight.dtype))
    loss = float(loss_and_backward(model, batch, draws))
    handle.remove()
    grads = {p.grad.dtype for p in model.parameters() if p.requires_grad and p.grad is not None}
    dtensors = all(hasattr(p, "to_local") for p in model.parameters())
    report.add(part, "MixedPrecisionPolicy: bf16 params in compute, fp32 sharded grads",
               f"{sorted(map(str, seen))} / {sorted(map(str, grads))}",
               passed=seen == {torch.bfloat16} and grads == {torch.float32} and dtensors,
               detail=f"every parameter a DTensor: {dtensors}")
    difference = abs(loss - reference_loss) / abs(reference_loss)
    report.add(part, "sharded loss vs unsharded (rel.)", difference, passed=difference <= LOSS_REL_TOLERANCE,
               detail=f"{loss:.6g} vs {reference_loss:.6g}, tolerance {LOSS_REL_TOLERANCE}")
    optimizer.step()

    def steps(target: torch.nn.Module, target_optimizer: torch.optim.Optimizer, count: int) -> None:
        for _ in range(count):
            target_optimizer.zero_grad(set_to_none=True)
            loss_and_backward(target, batch, draws)
            target_optimizer.step()

    with tempfile.TemporaryDirectory(prefix="gpu_check_dcp_") as folder:
        directory = Path(folder)
        began = time.perf_counter()
        save_sharded(directory, model, trainable_tensors(model), optimizer, None)
        save_s = time.perf_counter() - began
        at_resume = factors(model)
        saved_state = optimizer_tensors(model, optimizer)
        resumed, resumed_optimizer = _sharded(size, device, mesh)
        began = time.perf_counter()
        load_sharded(directory, resumed, trainable_tensors(resumed), resumed_optimizer, None)
        load_s = time.perf_counter() - began
        loaded_state = optimizer_tensors(resumed, resumed_optimizer)
        same_state = saved_state.keys() == loaded_state.keys() and all(
            torch.equal(saved_state[k], loaded_state[k]) for k in saved_state)
        same_factors = all(torch.equal(at_resume[k], v) for k, v in factors(resumed).items())
        report.add(part, "AdamW state + factors restored exactly", same_state and same_factors,
                   passed=same_state and same_factors and bool(saved_state),
                   detail=f"{len(saved_state)} state tensors; save {save_s:.2f} s, load {load_s:.2f} s")
        control, control_optimizer = _sharded(size, device, mesh)  # the factors only, a fresh AdamW
        state = {f"model.{name}": tensor.detach() for name, tensor in trainable_tensors(control).items()}
        with torch.no_grad():
            dcp.load(state, checkpoint_id=str(directory / SHARDED_DIR))
    steps(model, optimizer, 2)
    steps(resumed, resumed_optimizer, 2)
    steps(control, control_optimizer, 2)
    after = factors(model)
    difference = update_difference(at_resume, factors(resumed), after)
    report.add(part, "2 steps after resume: updates vs uninterrupted (rel.)", difference,
               passed=difference <= UPDATE_REL_TOLERANCE, detail=f"tolerance {UPDATE_REL_TOLERANCE}")
    lost = update_difference(at_resume, factors(control), after)
    report.add(part, "control: fresh AdamW after resume is detected (rel.)", lost,
               passed=lost > UPDATE_REL_TOLERANCE, detail=f"must exceed {UPDATE_REL_TOLERANCE}")
