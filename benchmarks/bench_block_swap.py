"""Block swap in training (`pusa_fw_train.block_swap`): step time and device-side weight bytes vs no swap.

A LoRA training step (r = 64 on Pusa's targets, gradient checkpointing, frozen base in bf16; bf16 autocast on
CUDA, float32 compute on the CPU, where bf16 matmuls are slow) of
a Wan DiT at the 1.3B width (dim 1536, 12 heads, ffn 8960) with a few real blocks, with ``block_swap`` 0 and
N. Reported per row: the mean step time, the bytes of frozen block weights resident on the compute device
(the non-swapped blocks) plus the most the swapped blocks' copies ever held at once (``peak_live_bytes``),
and whether the LoRA gradients equal the no-swap ones bit for bit. On CUDA the peak allocated device memory
is reported too; on the CPU the "device" is the host, so the byte columns are accounting, not savings.

    python benchmarks/bench_block_swap.py [--blocks 4] [--swap 3] [--tokens 256] [--steps 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from pusa_fw_train.block_swap import BlockSwap
from pusa_fw_train.lora import inject_lora, trainable_tensors
from pusa_fw_wan import WanConfig, WanDiT
from pusa_fw_wan.testing.tiny import randomise_parameters
from pusa_fw_wan.train.adapter import PUSA_LORA_TARGETS


def build(blocks: int, swap: int, device: torch.device) -> tuple[WanDiT, BlockSwap | None]:
    """A 1.3B-width DiT with `blocks` blocks, bf16 base, LoRA r64, checkpointing; `swap` blocks swapped."""
    config = WanConfig.t2v_1_3b().model_copy(update={"num_layers": blocks})
    model = WanDiT(config)
    randomise_parameters(model, torch.Generator().manual_seed(0))
    model.set_weights_dtype("bfloat16")
    torch.manual_seed(0)
    inject_lora(model, PUSA_LORA_TARGETS, 64, 64.0)
    with torch.no_grad():
        for tensor in trainable_tensors(model).values():
            tensor.normal_(0.0, 0.01, generator=torch.Generator().manual_seed(tensor.numel()))
    model.enable_gradient_checkpointing(True)
    model.train()
    block_swap = BlockSwap(model, swap, device) if swap else None
    return model.to(device), block_swap


def resident_block_bytes(model: WanDiT, block_swap: BlockSwap | None) -> int:
    """Bytes of the blocks' frozen tensors kept on the compute device (all but the swapped ones)."""
    total = 0
    for block in model.blocks:
        for tensor in [*block.parameters(), *block.buffers()]:
            if not tensor.requires_grad:
                total += tensor.numel() * tensor.element_size()
    return total - (block_swap.host_bytes() if block_swap is not None else 0)


def run(blocks: int, swap: int, tokens: int, steps: int, device: torch.device) -> dict:
    model, block_swap = build(blocks, swap, device)
    side = int(round((tokens / 4) ** 0.5))  # 4 latent frames of side x side tokens (2x2 patches)
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 16, 4, 2 * side, 2 * side, generator=generator).to(device)
    sigmas = torch.rand(1, 4, generator=generator).to(device)
    context = torch.randn(1, 64, 4096, generator=generator).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps + 1):  # the first step warms up
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            velocity = model(latents, sigmas, context)
        velocity.float().square().mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    grads = {name: tensor.grad.clone() for name, tensor in trainable_tensors(model).items()}
    return {
        "swap": swap,
        "step_s": sum(times[1:]) / steps,
        "resident_block_bytes": resident_block_bytes(model, block_swap),
        "swapped_peak_bytes": block_swap.peak_live_bytes if block_swap is not None else 0,
        "host_bytes": block_swap.host_bytes() if block_swap is not None else 0,
        "device_peak_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        "grads": grads,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--swap", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=256, help="transformer tokens per sample (approx.)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = [run(args.blocks, swap, args.tokens, args.steps, device) for swap in (0, args.swap)]
    reference = rows[0].pop("grads")
    for row in rows[1:]:
        grads = row.pop("grads")
        row["grads_equal"] = all(torch.equal(grads[name], reference[name]) for name in reference)
    rows[0]["grads_equal"] = True
    if args.json:
        print(json.dumps(rows))
        return
    mib = 2**20
    print(f"block swap, LoRA r64 step, 1.3B width x {args.blocks} blocks, ~{args.tokens} tokens, {device}")
    print(f"{'swap':>5}{'step s':>9}{'resident MiB':>14}{'swapped peak MiB':>18}{'host MiB':>10}"
          f"{'device peak MiB':>17}{'grads equal':>13}")
    for row in rows:
        peak = "-" if row["device_peak_bytes"] is None else f"{row['device_peak_bytes'] / mib:.0f}"
        print(f"{row['swap']:>5}{row['step_s']:>9.2f}{row['resident_block_bytes'] / mib:>14.0f}"
              f"{row['swapped_peak_bytes'] / mib:>18.0f}{row['host_bytes'] / mib:>10.0f}{peak:>17}"
              f"{str(row['grads_equal']):>13}")


if __name__ == "__main__":
    main()
