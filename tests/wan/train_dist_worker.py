"""A few FAFM training steps on a tiny Wan, run under torchrun (or in-process as the single-process reference).

Usage (what `test_train_distributed.py` runs):
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/wan/train_dist_worker.py OUT

Every scenario trains the same seeded model on the same global batches (latents, context, sigmas and
noise fixed per *sample index*, so they do not depend on the rank), and rank 0 writes the trained
weights (`<scenario>.safetensors`) and the per-step losses (`<scenario>.json`) to OUT. Then every rank
provokes each bad layout and writes the error it got to ``bad-<layout>.rank<r>.txt``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

SAMPLE_SHAPE = (16, 3, 4, 4)  # [C, F, H, W] latents: 3 frames of 2x2 tokens
CONTEXT_ROWS = 5
SCENARIOS = {
    # name: (strategy, lora, number of samples, global batch size); "_gc": gradient checkpointing
    "ddp_lora": ("ddp", True, 8, 4),
    "fsdp_full": ("fsdp", False, 8, 4),
    "fsdp_full_gc": ("fsdp", False, 8, 4),
    "fsdp_lora": ("fsdp", True, 8, 4),
    "ddp_lora_uneven": ("ddp", True, 5, 3),  # batches of 3, 2: rank 1 pads the first one
}
LORA_TARGETS = ["self_attn.q", "self_attn.v", "cross_attn.o", "ffn.0"]


def tiny_model(lora: bool) -> torch.nn.Module:
    """A seeded tiny WanDiT (dim 64, 2 heads, 2 blocks, text_len 8); LoRA factors random, base frozen."""
    from pusa_fw_wan import WanConfig, WanDiT

    torch.manual_seed(0)
    config = WanConfig(
        dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32, freq_dim=64, text_len=8
    )
    model = WanDiT(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "modulation" not in name and "norm" not in name:
                parameter.copy_(torch.randn_like(parameter) / max(1, parameter[0].numel()) ** 0.5)
    if lora:
        from peft import LoraConfig, inject_adapter_in_model

        model.requires_grad_(False)
        config = LoraConfig(r=4, lora_alpha=4, target_modules=LORA_TARGETS, init_lora_weights=False)
        model = inject_adapter_in_model(config, model)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_("lora_" in name)
    return model


def sample(index: int) -> dict[str, torch.Tensor]:
    """Latents, context, per-frame sigmas and noise of sample ``index`` (independent of rank)."""
    generator = torch.Generator().manual_seed(1000 + index)
    return {
        "latents": torch.randn(SAMPLE_SHAPE, generator=generator),
        "context": torch.randn(CONTEXT_ROWS, 32, generator=generator),
        "sigmas": torch.rand(SAMPLE_SHAPE[1], generator=generator),
        "noise": torch.randn(SAMPLE_SHAPE, generator=generator),
    }


def global_batches(num_samples: int, batch_size: int) -> list[list[int]]:
    """Fixed global batches (the last one may be short), identical on every rank."""
    order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(7)).tolist()
    return [order[start : start + batch_size] for start in range(0, num_samples, batch_size)]


def batch_terms(model: torch.nn.Module, indices: list[int]) -> torch.Tensor:
    """Per-frame FAFM loss terms `[b, F]` of the samples ``indices``, through ``model(...)``."""
    from pusa_fw.fafm import fafm_loss, noise_latents

    samples = [sample(index) for index in indices]
    x0 = torch.stack([item["latents"] for item in samples])
    noise = torch.stack([item["noise"] for item in samples])
    sigmas = torch.stack([item["sigmas"] for item in samples])
    context = torch.stack([item["context"] for item in samples])
    velocity = model(noise_latents(x0, noise, sigmas), sigmas, context)
    return fafm_loss(velocity, x0, noise, reduction="none")


def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)


def reference_run(scenario: str) -> tuple[dict[str, torch.Tensor], list[float]]:
    """The single-process run: plain model, plain FAFM mean over each whole global batch."""
    _, lora, num_samples, batch_size = SCENARIOS[scenario]
    model = tiny_model(lora)
    optimizer = make_optimizer(model)
    losses = []
    for indices in global_batches(num_samples, batch_size):
        optimizer.zero_grad()
        loss = batch_terms(model, indices).mean()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    trained = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    return trained, losses


def distributed_run(scenario: str, ctx, out: Path) -> None:
    """Train under ``ctx``; check that a gathered checkpoint restores an identical next step."""
    from safetensors.torch import save_file

    from pusa_fw_train.state_dicts import (
        gather_full_optimizer_state,
        gather_full_state_dict,
        load_full_optimizer_state,
        load_full_state_dict,
    )
    from pusa_fw_train.wrapping import wrap_model
    from pusa_fw_train.sharding import global_mean_loss, shard_global_batch
    from pusa_fw_wan.parallel.fsdp import shard_dit

    strategy, lora, num_samples, batch_size = SCENARIOS[scenario]
    model = tiny_model(lora)
    model.enable_gradient_checkpointing(scenario.endswith("_gc"))
    model = wrap_model(model, ctx, strategy, shard=shard_dit)
    optimizer = make_optimizer(model)
    steps = global_batches(num_samples, batch_size)

    def train_step(module: torch.nn.Module, opt: torch.optim.Optimizer, indices: list[int]) -> float:
        shard = shard_global_batch(indices, ctx.rank, ctx.world_size)
        opt.zero_grad()
        loss = global_mean_loss(batch_terms(module, list(shard.indices)), shard)
        loss.backward()
        opt.step()
        return ctx.mean_over_ranks(loss.detach())

    losses = [train_step(model, optimizer, indices) for indices in steps[:-1]]
    weights = gather_full_state_dict(model, ctx, trainable_only=True)
    optimizer_state = gather_full_optimizer_state(model, optimizer, ctx)
    # Resume: every rank gets rank 0's checkpoint (as if read from disk) into a fresh wrapped model.
    shared = [weights, optimizer_state]
    torch.distributed.broadcast_object_list(shared, src=0)
    fresh = tiny_model(lora)
    fresh.enable_gradient_checkpointing(scenario.endswith("_gc"))
    resumed = wrap_model(fresh, ctx, strategy, shard=shard_dit)
    resumed_optimizer = make_optimizer(resumed)
    load_full_state_dict(resumed, shared[0], ctx, trainable_only=True)
    load_full_optimizer_state(resumed, resumed_optimizer, shared[1], ctx)
    losses.append(train_step(model, optimizer, steps[-1]))
    resumed_loss = train_step(resumed, resumed_optimizer, steps[-1])
    final = gather_full_state_dict(model, ctx)
    final_resumed = gather_full_state_dict(resumed, ctx)
    if ctx.is_main:
        save_file({name: t.contiguous() for name, t in final.items()}, str(out / f"{scenario}.safetensors"))
        save_file(
            {name: t.contiguous() for name, t in final_resumed.items()},
            str(out / f"{scenario}.resumed.safetensors"),
        )
        report = {"losses": losses, "resumed_last_loss": resumed_loss, "world_size": ctx.world_size}
        (out / f"{scenario}.json").write_text(json.dumps(report))


def record_bad_layouts(ctx, out: Path) -> None:
    """Provoke each bad layout; every rank must raise (and write) the one-line error, none may hang."""
    from pusa_fw.errors import PusaError
    from pusa_fw_train.parallel import init_distributed
    from pusa_fw_train.wrapping import wrap_model

    def provoke(name: str, action) -> None:
        try:
            action()
            message = "no error"
        except PusaError as error:
            message = f"{type(error).__name__}: {error}"
        (out / f"bad-{name}.rank{ctx.rank}.txt").write_text(message)

    provoke("none-under-torchrun", lambda: init_distributed("none"))
    # rank 0 builds a LoRA run, rank 1 a full fine-tune: different trainable parameters
    provoke("ranks-disagree", lambda: wrap_model(tiny_model(lora=ctx.rank == 0), ctx, "ddp"))


def main(argv: list[str]) -> int:
    from pusa_fw_train.parallel import init_distributed

    torch.set_num_threads(1)
    out = Path(argv[0])
    with init_distributed("ddp") as ctx:
        progress = out / f"progress.rank{ctx.rank}.txt"
        for scenario in SCENARIOS:
            distributed_run(scenario, ctx, out)
            with progress.open("a") as file:
                file.write(f"{scenario} done\n")
        record_bad_layouts(ctx, out)
        with progress.open("a") as file:
            file.write("bad layouts done\n")
    with progress.open("a") as file:
        file.write("process group closed\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
