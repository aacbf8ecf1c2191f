"""One FAFM training step: WanDiT (LoRA / full, with and without gradient checkpointing) vs diffusers + peft.

A step is: noise the latents per frame, ``model(noised, sigmas, context)``, FAFM loss, backward, AdamW
step. Both models have the same random base weights (diffusers' ``WanTransformer3DModel`` is loaded from
ours). Ours is what ``pusa-fw train`` runs: LoRA injected by the trainer (`pusa_fw_train.lora.inject_lora`)
and the trainer's loss (`pusa_fw_train.step.frame_loss_terms`, through the core's ``fafm_forward``);
diffusers gets LoRA from peft (``inject_adapter_in_model``) and the core's ``noise_latents`` /
``fafm_loss``. Targets are Pusa's (q, k, v, o of self- and cross-attention, ``ffn.0``, ``ffn.2``), rank =
alpha = ``--rank``. Our model takes per-frame sigmas
``[B, F]``; diffusers gets per-token timesteps ``[B, L]`` (the per-frame values repeated over each
frame's tokens), which is how it trains with one timestep per frame.

Sizes (``--size``):
- ``large``: 1.3B width (dim 1536, 12 heads, ffn 8960, text_dim 4096, text_len 512), 2 layers, latents
  1x16x5x30x52 (1950 tokens), a 512-row context. Variants ours LoRA / full x checkpointing off / on, and
  diffusers + peft LoRA off / on.
- ``toy``: dim 256, 2 heads, ffn 1024, 4 layers, text_dim 256, text_len 16, latents 16x16x5x8x8 (80
  tokens per sample, batch 16), where fixed per-step costs weigh most. Ours LoRA / full, diffusers LoRA;
  LoRA rank 16.

Times: one warm-up step each, then ``--repeats`` rounds over all variants (round-robin, order reversed
every other round; the median is reported). Peak memory: one step in a fresh process per variant
(``--peak``): peak of live tensor bytes (tracked at the dispatcher, deterministic: weights, inputs,
activations, gradients, optimizer state) and peak RSS (``VmHWM``, allocator noise included).
``--profile`` adds, for ours and diffusers' LoRA step, where the time goes: self CPU time per operator
group (torch.profiler over one step after the timed rounds).

    python benchmarks/bench_train.py [--size large|toy|both] [--repeats 3] [--rank R] [--threads N] [--json]
        [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_backbone import TensorMemoryTracker, peak_rss_mb

from pusa_fw.fafm import fafm_loss, noise_latents
from pusa_fw_train.lora import inject_lora
from pusa_fw_train.step import Batch, StepDraws, frame_loss_terms
from pusa_fw_wan import WanConfig, WanDiT

OURS_TARGETS = ["self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
                "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2"]
DIFFUSERS_TARGETS = ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                     "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2"]


@dataclass(frozen=True)
class Size:
    config: WanConfig
    latent_shape: tuple[int, int, int, int, int]
    text_rows: int
    variants: tuple[str, ...]
    lora_rank: int


SIZES = {
    "large": Size(
        WanConfig(dim=1536, ffn_dim=8960, num_heads=12, freq_dim=256, text_dim=4096, num_layers=2),
        (1, 16, 5, 30, 52),
        512,
        ("ours_lora", "ours_lora_gc", "ours_full", "ours_full_gc", "diffusers_lora", "diffusers_lora_gc"),
        128,
    ),
    "toy": Size(
        WanConfig(dim=256, ffn_dim=1024, num_heads=2, freq_dim=256, text_dim=256, text_len=16, num_layers=4),
        (16, 16, 5, 8, 8),
        16,
        ("ours_lora", "ours_full", "diffusers_lora"),
        16,
    ),
}


def build_inputs(size: Size) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    batch, _, frames, height, width = size.latent_shape
    patch = size.config.patch_size
    tokens_per_frame = (height // patch[1]) * (width // patch[2])
    sigmas = torch.rand(batch, frames, generator=generator)
    return {
        "x0": torch.randn(size.latent_shape, generator=generator),
        "noise": torch.randn(size.latent_shape, generator=generator),
        "context": torch.randn(batch, size.text_rows, size.config.text_dim, generator=generator),
        "sigmas": sigmas,
        "token_timesteps": (1000.0 * sigmas).repeat_interleave(tokens_per_frame, dim=1),
    }


def _inject_peft_lora(model: torch.nn.Module, targets: list[str], rank: int) -> torch.nn.Module:
    from peft import LoraConfig, inject_adapter_in_model

    model.requires_grad_(False)
    model = inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets), model)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_("lora_" in name)
    return model


def build_ours(size: Size, lora: bool, rank: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = WanDiT(size.config).train()
    if lora:
        inject_lora(model, tuple(OURS_TARGETS), rank, float(rank))
    return model


def build_diffusers(size: Size, rank: int) -> torch.nn.Module:
    from diffusers import WanTransformer3DModel

    from pusa_fw_wan.dit.key_mapping import official_to_diffusers

    torch.manual_seed(0)
    base = WanDiT(size.config)
    model = WanTransformer3DModel(**size.config.to_diffusers_kwargs())
    model.load_state_dict({official_to_diffusers(k): v for k, v in base.state_dict().items()}, strict=True)
    del base
    return _inject_peft_lora(model.train(), DIFFUSERS_TARGETS, rank)


def make_step(variant: str, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> Callable[[], float]:
    """The training step of one variant, as a closure returning the loss."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    checkpointing = variant.endswith("_gc")
    x0, noise, sigmas, context = inputs["x0"], inputs["noise"], inputs["sigmas"], inputs["context"]

    batch = Batch(latents=x0, context=context, indices=tuple(range(x0.shape[0])), captions=("",) * x0.shape[0])
    draws = StepDraws(sigmas=sigmas, eps=noise, loss_mask=torch.ones_like(sigmas, dtype=torch.bool))

    def loss_of_step() -> torch.Tensor:
        if variant.startswith("diffusers"):
            noised = noise_latents(x0, noise, sigmas)
            return fafm_loss(model(noised, inputs["token_timesteps"], context, return_dict=False)[0], x0, noise)
        terms, _ = frame_loss_terms(model, batch, draws)
        return terms.mean()

    def step() -> float:
        if variant.startswith("diffusers"):
            (model.enable_gradient_checkpointing if checkpointing else model.disable_gradient_checkpointing)()
        else:
            model.enable_gradient_checkpointing(checkpointing)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of_step()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def build_models(size: Size, rank: int) -> dict[str, torch.nn.Module]:
    models: dict[str, torch.nn.Module] = {}
    kinds = {variant.removesuffix("_gc") for variant in size.variants}
    for kind in sorted(kinds):
        if kind == "ours_lora":
            models[kind] = build_ours(size, lora=True, rank=rank)
        elif kind == "ours_full":
            models[kind] = build_ours(size, lora=False, rank=rank)
        else:
            models[kind] = build_diffusers(size, rank)
    return models


def time_size(size: Size, rank: int, repeats: int) -> dict[str, float]:
    inputs = build_inputs(size)
    models = build_models(size, rank)
    steps = {v: make_step(v, models[v.removesuffix("_gc")], inputs) for v in size.variants}
    # With LoRA B = 0 the first step's loss is the base model's: ours and diffusers must agree.
    first_loss = {variant: step() for variant, step in steps.items()}
    times: dict[str, list[float]] = {variant: [] for variant in steps}
    for round_index in range(repeats):
        order = list(steps.items())
        for variant, step in order if round_index % 2 == 0 else reversed(order):
            start = time.perf_counter()
            step()
            times[variant].append(time.perf_counter() - start)
    results = {f"{variant}_s": statistics.median(values) for variant, values in times.items()}
    results["first_loss_ours_lora"] = first_loss["ours_lora"]
    results["first_loss_diffusers_lora"] = first_loss["diffusers_lora"]
    return results


PROFILE_GROUPS = (
    ("matmul (linears, LoRA)", ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear")),
    ("attention fwd + bwd", ("scaled_dot_product", "_flash_attention")),
    ("gelu fwd + bwd", ("aten::gelu",)),
    ("norms fwd + bwd", ("layer_norm", "rms_norm", "aten::rsqrt", "aten::pow")),
    ("elementwise (mul, add, copy, ...)", ("aten::mul", "aten::add", "aten::copy_", "aten::addcmul", "aten::sub",
                                           "aten::cat", "aten::fill_", "aten::div", "aten::clone")),
    ("optimizer (AdamW)", ("aten::lerp", "aten::addcdiv", "aten::sqrt", "aten::_foreach", "aten::mul_",
                           "aten::add_")),
)


def profile_step(size: Size, variant: str, rank: int) -> dict[str, float]:
    """Self CPU seconds of one warm step of `variant`, by operator group (`PROFILE_GROUPS`, rest "other")."""
    from torch.profiler import ProfilerActivity, profile

    inputs = build_inputs(size)
    kind = variant.removesuffix("_gc")
    model = build_diffusers(size, rank) if kind == "diffusers_lora" else build_ours(size, kind == "ours_lora", rank)
    step = make_step(variant, model, inputs)
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    groups = {name: 0.0 for name, _ in PROFILE_GROUPS} | {"other": 0.0}
    for event in prof.key_averages():
        seconds = event.self_cpu_time_total / 1e6
        group = next((name for name, keys in PROFILE_GROUPS if any(key in event.key for key in keys)), "other")
        groups[group] += seconds
    return groups


def print_profile(size_name: str, rank: int) -> None:
    size = SIZES[size_name]
    ours, theirs = profile_step(size, "ours_lora", rank), profile_step(size, "diffusers_lora", rank)
    print(f"\n{size_name}: where one LoRA step's time goes (self CPU s, torch.profiler, one warm step each)")
    print(f"{'operator group':<36} {'ours':>8} {'diffusers':>10} {'ours - diff.':>13}")
    for group in ours:
        print(f"{group:<36} {ours[group]:>8.3f} {theirs[group]:>10.3f} {ours[group] - theirs[group]:>+13.3f}")
    total_ours, total_theirs = sum(ours.values()), sum(theirs.values())
    print(f"{'total':<36} {total_ours:>8.3f} {total_theirs:>10.3f} {total_ours - total_theirs:>+13.3f}")


def peak_child(size_name: str, variant: str, rank: int) -> dict[str, float]:
    """Runs in a fresh process: one step of ``variant``; peak tensor bytes and peak RSS, in MB."""
    size = SIZES[size_name]
    inputs = build_inputs(size)
    kind = variant.removesuffix("_gc")
    model = build_diffusers(size, rank) if kind == "diffusers_lora" else build_ours(size, kind == "ours_lora", rank)
    step = make_step(variant, model, inputs)
    tracker = TensorMemoryTracker([*model.parameters(), *inputs.values()])
    with tracker:
        step()
    return {"tensor_peak_mb": tracker.peak / 2**20, "rss_peak_mb": peak_rss_mb()}


def run_peak(size_name: str, variant: str, rank: int) -> dict[str, float]:
    command = [sys.executable, os.path.abspath(__file__), "--peak", f"{size_name}:{variant}", "--rank", str(rank),
               "--threads", str(torch.get_num_threads())]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run(size_names: list[str], rank_override: int | None, repeats: int) -> dict[str, dict[str, float]]:
    report: dict[str, dict[str, float]] = {}
    for size_name in size_names:
        size = SIZES[size_name]
        rank = rank_override or size.lora_rank
        results = time_size(size, rank, repeats)
        for variant in size.variants:
            peak = run_peak(size_name, variant, rank)
            results[f"{variant}_peak_mb"] = peak["tensor_peak_mb"]
            results[f"{variant}_peak_rss_mb"] = peak["rss_peak_mb"]
        results.update(
            {"threads": torch.get_num_threads(), "repeats": repeats, "lora_rank": rank,
             "load_average_1min": os.getloadavg()[0]}
        )
        report[size_name] = results
    return report


def print_table(report: dict[str, dict[str, float]]) -> None:
    for size_name, results in report.items():
        size = SIZES[size_name]
        print(f"\n{size_name}: {size.config.dim} dim, {size.config.num_layers} layers, latents "
              f"{'x'.join(map(str, size.latent_shape))}, LoRA rank {results['lora_rank']}, "
              f"{results['threads']} threads, load {results['load_average_1min']:.2f}")
        reference = results["diffusers_lora_s"]
        print(f"{'variant':<20} {'step s':>8} {'vs diff.':>9} {'peak MB':>9} {'peak RSS MB':>12}")
        for variant in size.variants:
            base = results["diffusers_lora_gc_s"] if variant.endswith("_gc") and "diffusers_lora_gc_s" in results else reference
            print(f"{variant:<20} {results[f'{variant}_s']:>8.3f} {results[f'{variant}_s'] / base:>9.3f} "
                  f"{results[f'{variant}_peak_mb']:>9.1f} {results[f'{variant}_peak_rss_mb']:>12.0f}")
        print(f"first-step loss ours / diffusers (LoRA B = 0): {results['first_loss_ours_lora']:.6f} / "
              f"{results['first_loss_diffusers_lora']:.6f}")
        print("goal: ours_lora <= 0.9x diffusers_lora step time, and no more peak memory")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["large", "toy", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median; >= 3)")
    parser.add_argument("--rank", type=int, help="LoRA rank, alpha = rank (default 128 large, 16 toy)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--profile", action="store_true", help="add the per-operator-group time of one LoRA step")
    parser.add_argument("--peak", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads {args.threads}: use at least 1")
        torch.set_num_threads(args.threads)
    if args.peak:
        size_name, variant = args.peak.split(":")
        print(json.dumps(peak_child(size_name, variant, args.rank or SIZES[size_name].lora_rank)))
        return
    if args.repeats < 3:
        parser.error(f"--repeats {args.repeats}: use at least 3 for a median")
    if args.rank is not None and args.rank < 1:
        parser.error(f"--rank {args.rank}: the LoRA rank must be >= 1")
    sizes = ["large", "toy"] if args.size == "both" else [args.size]
    report = run(sizes, args.rank, args.repeats)
    print(json.dumps(report) if args.json else "", end="\n" if args.json else "")
    if not args.json:
        print_table(report)
    if args.profile:
        for size_name in sizes:
            print_profile(size_name, args.rank or SIZES[size_name].lora_rank)


if __name__ == "__main__":
    main()
