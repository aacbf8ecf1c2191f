"""Shard-only loads of a scaled-fp8 DiT file in every storage dtype: one torchrun launch (gloo, CPU, 2 ranks).

Usage (what ``test_parallel_generate.py`` runs):
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/wan/shard_bits_worker.py DIT OUT

For every ``--weights-dtype`` of `WEIGHTS_DTYPES`, each rank loads DIT with `load_sharded_dit` (float32
compute, as ``generate`` on a CPU) and writes ``OUT/<dtype>-rank<R>.safetensors``: its local dim-0 shard of
every parameter and buffer (fp8 as its uint8 bits), which the test concatenates and compares with one process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

WEIGHTS_DTYPES = ("bfloat16", "float16", "float8_e4m3fn")


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor as safetensors can store it: fp8 viewed as uint8, everything else as it is."""
    if tensor.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        return tensor.view(torch.uint8)
    return tensor


def main(dit: Path, out: Path) -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file
    from torch.distributed.device_mesh import init_device_mesh

    from pusa_fw_wan.parallel.fsdp import load_sharded_dit

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for weights_dtype in WEIGHTS_DTYPES:
        model, _ = load_sharded_dit(dit, mesh, "cpu", dtype=torch.float32, weights_dtype=weights_dtype)
        tensors = {name: bits(parameter.to_local()).contiguous()
                   for name, parameter in model.named_parameters()}
        tensors.update({name: bits(buffer).contiguous() for name, buffer in model.named_buffers()})
        save_file(tensors, str(out / f"{weights_dtype}-rank{rank}.safetensors"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
