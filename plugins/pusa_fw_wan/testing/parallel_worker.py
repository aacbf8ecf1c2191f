"""A `torchrun` worker that runs the Wan DiT under a parallel layout and saves rank 0's velocities.

Used by the multi-process tests and `benchmarks/bench_parallel.py`::

    torchrun --nproc_per_node 2 -m pusa_fw_wan.testing.parallel_worker \\
        --model DIR --cases cases.safetensors --out out.safetensors --fsdp

``cases.safetensors`` holds ``latents`` `[B, C, F, H, W]`, ``context`` `[B, L, text_dim]` and any number of
``sigmas.<name>`` (`[B]` or `[B, F]`); the output holds ``velocity.<name>`` for each, written by rank 0
only (atomically). Every rank computes the same thing, so the single-process reference is the plain
model on the same inputs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pusa_fw.io.atomic import atomic_path

__all__ = ["main"]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="parallel_worker")
    parser.add_argument("--model", type=Path, required=True, help="WanDiT checkpoint directory")
    parser.add_argument("--cases", type=Path, required=True, help="inputs (.safetensors)")
    parser.add_argument("--out", type=Path, required=True, help="rank 0 writes the velocities here")
    parser.add_argument("--fsdp", action="store_true", help="shard the DiT with FSDP2 over all ranks")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run every case of ``--cases`` through the parallel DiT and save the velocities (rank 0)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from pusa_fw_wan.dit.model import WanDiT
    from pusa_fw_wan.parallel.fsdp import shard_dit

    args = _parse(argv)
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        model = WanDiT.from_pretrained(args.model).eval().requires_grad_(False)
        if args.fsdp:
            shard_dit(model, init_device_mesh("cpu", (dist.get_world_size(),)))
        cases = load_file(str(args.cases))
        outputs = {}
        with torch.no_grad():
            for key, sigmas in cases.items():
                if key.startswith("sigmas."):
                    name = key.removeprefix("sigmas.")
                    outputs[f"velocity.{name}"] = model(cases["latents"], sigmas, cases["context"]).contiguous()
        if dist.get_rank() == 0:
            with atomic_path(args.out) as temp:
                save_file(outputs, str(temp))
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
