"""DDP and FSDP2 wrapping under one torchrun launch (gloo, 2 CPU ranks); rank 0 writes a JSON report.

Scenarios (see `test_train_wrapping_dist.py`): FSDP2 gradient accumulation keeps only sharded gradients
between micro-steps and equals one big batch; DDP skips the frozen base and the buffers but still syncs
and reduces the trainable tensors; the FSDP2 fallback build gives every rank rank 0's weights.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FSDPModule

from pusa_fw_train.parallel import init_distributed
from pusa_fw_train.wrapping import gradient_sync, wrap_model
from pusa_fw_wan.parallel.fsdp import shard_dit

GLOBAL_BATCH = 8
ACCUMULATION = 2
WIDTH = 6


class TinyBlocks(nn.Module):
    """Three linear blocks (`blocks`, what `shard_dit` shards) and a head, with one buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(WIDTH, WIDTH) for _ in range(3))
        self.head = nn.Linear(WIDTH, 1)
        self.register_buffer("shift", torch.linspace(-0.5, 0.5, WIDTH))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.shift
        for block in self.blocks:
            x = torch.tanh(block(x))
        return self.head(x).squeeze(-1)


def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return torch.randn(GLOBAL_BATCH, WIDTH, generator=generator), torch.randn(GLOBAL_BATCH, generator=generator)


def rank_micro_batches(rank: int, world: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's samples of the global batch (r, r + W, ...), cut into ACCUMULATION micro-batches."""
    inputs, targets = data()
    mine = list(range(rank, GLOBAL_BATCH, world))
    size = len(mine) // ACCUMULATION
    return [(inputs[mine[i * size:(i + 1) * size]], targets[mine[i * size:(i + 1) * size]])
            for i in range(ACCUMULATION)]


def one_big_batch_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    inputs, targets = data()
    model.zero_grad()
    nn.functional.mse_loss(model(inputs), targets).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def fsdp_params(model: nn.Module) -> list[Any]:
    found = []
    for module in model.modules():
        if isinstance(module, FSDPModule):
            state = module._get_fsdp_state()
            groups = getattr(state, "_fsdp_param_groups", None) or [state._fsdp_param_group]
            found += [fsdp_param for group in groups if group is not None for fsdp_param in group.fsdp_params]
    return found


def unsharded_grads(model: nn.Module) -> list[str]:
    """Names of FSDPParams holding an unsharded gradient (plain or accumulated in the reduce dtype)."""
    held = []
    for fsdp_param in fsdp_params(model):
        unsharded = getattr(fsdp_param, "_unsharded_param", None)
        if getattr(fsdp_param, "unsharded_accumulated_grad", None) is not None or (
            unsharded is not None and unsharded.grad is not None
        ):
            held.append(fsdp_param._param_fqn or repr(fsdp_param))
    return held


def sharded_grads_ok(model: nn.Module, world: int) -> bool:
    """Every gradient is a DTensor whose local part has the size of the parameter's shard."""
    from torch.distributed.tensor import DTensor

    for parameter in model.parameters():
        grad = parameter.grad
        if not isinstance(grad, DTensor) or grad.to_local().shape != parameter.to_local().shape:
            return False
        if parameter.to_local().shape[0] > -(-parameter.shape[0] // world):  # dim 0 cut in W chunks
            return False
    return True


def fsdp_accumulation(context: Any, mixed: bool) -> dict[str, Any]:
    torch.manual_seed(0)
    model = TinyBlocks()
    reference = copy.deepcopy(model)
    precision = {"param_dtype": torch.bfloat16, "reduce_dtype": torch.float32} if mixed else {}
    wrapped = wrap_model(model, context, "fsdp", shard=shard_dit, **precision)
    between: dict[str, Any] = {}
    for micro_step, (inputs, targets) in enumerate(rank_micro_batches(context.rank, context.world_size)):
        with gradient_sync(wrapped, micro_step == ACCUMULATION - 1):
            (nn.functional.mse_loss(wrapped(inputs).float(), targets) / ACCUMULATION).backward()
        if micro_step == 0:
            between = {"unsharded": unsharded_grads(wrapped),
                       "sharded_ok": sharded_grads_ok(wrapped, context.world_size)}
    got = {name: p.grad.full_tensor() for name, p in wrapped.named_parameters()}
    want = one_big_batch_grads(reference)
    error = max(float((got[name] - want[name]).abs().max()) for name in want)
    scale = max(float(want[name].abs().max()) for name in want)
    return {**between, "max_error": error, "max_grad": scale, "names": sorted(got) == sorted(want)}


def ddp_frozen(context: Any) -> dict[str, Any]:
    torch.manual_seed(0)
    model = TinyBlocks()
    for block in model.blocks:
        block.requires_grad_(False)  # the "frozen base"; the head is trainable
    reference = copy.deepcopy(model)
    with torch.no_grad():  # what a broadcast would undo: rank 1 differs in a frozen and a trainable tensor
        if context.rank == 1:
            model.blocks[0].bias.add_(1.0)
            model.head.weight.add_(1.0)
    wrapped = wrap_model(model, context, "ddp")
    ignored = sorted(getattr(model, "_ddp_params_and_buffers_to_ignore", []))
    frozen_bias = model.blocks[0].bias.detach().clone()
    gathered = [torch.zeros_like(frozen_bias) for _ in range(context.world_size)]
    dist.all_gather(gathered, frozen_bias)
    head = [torch.zeros_like(model.head.weight) for _ in range(context.world_size)]
    dist.all_gather(head, model.head.weight.detach().clone())
    with torch.no_grad():  # back to identical frozen weights for the training comparison
        model.blocks[0].bias.copy_(reference.blocks[0].bias)
    inputs, targets = rank_micro_batches(context.rank, context.world_size)[0]
    nn.functional.mse_loss(wrapped(inputs), targets).backward()
    grad = model.head.weight.grad
    reference_inputs, reference_targets = data()
    mine = [i for r in range(context.world_size) for i in range(r, GLOBAL_BATCH, context.world_size)
            [: (GLOBAL_BATCH // context.world_size) // ACCUMULATION]]
    reference.zero_grad()
    nn.functional.mse_loss(reference(reference_inputs[mine]), reference_targets[mine]).backward()
    return {
        "ignored": ignored,
        "broadcast_buffers": wrapped.broadcast_buffers,
        "frozen_differs_across_ranks": not torch.equal(gathered[0], gathered[1]),
        "trainable_synced": torch.equal(head[0], head[1]),
        "grad_error": float((grad - reference.head.weight.grad).abs().max()),
        "frozen_grads": [name for name, p in model.named_parameters() if p.grad is not None and not p.requires_grad],
    }


def fsdp_fallback(context: Any) -> dict[str, Any]:
    torch.manual_seed(0)
    model = TinyBlocks()
    want = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    if context.rank == 1:  # a rank whose build differs: it must end up with rank 0's weights
        with torch.no_grad():
            for tensor in model.state_dict().values():
                tensor.add_(3.0)
    calls: list[str] = []
    original = nn.Module.to

    def recording_to(module: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
        calls.append(type(module).__name__)
        return original(module, *args, **kwargs)

    nn.Module.to = recording_to  # type: ignore[method-assign]
    try:
        wrapped = wrap_model(model, context, "fsdp", shard=shard_dit)
    finally:
        nn.Module.to = original  # type: ignore[method-assign]
    got = {name: (t.full_tensor() if hasattr(t, "full_tensor") else t) for name, t in wrapped.state_dict().items()}
    return {
        "equal_rank0": sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want),
        "whole_model_to": "TinyBlocks" in calls,
    }


def main(out: Path) -> None:
    torch.set_num_threads(1)
    with init_distributed("fsdp") as context:
        report = {
            "fsdp_fp32": fsdp_accumulation(context, mixed=False),
            "fsdp_bf16": fsdp_accumulation(context, mixed=True),
            "ddp": ddp_frozen(context),
            "fallback": fsdp_fallback(context),
        }
        reports = [None] * context.world_size
        dist.all_gather_object(reports, report)
        if context.rank == 0:
            (out / "report.json").write_text(json.dumps(reports))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
