"""A `torchrun` worker that runs the Wan DiT under a parallel layout and saves rank 0's velocities.

Used by the multi-process tests and `benchmarks/bench_parallel.py`::

    torchrun --nproc_per_node 2 -m pusa_fw_wan.testing.parallel_worker \\
        --model DIR --cases cases.safetensors --out out.safetensors --fsdp
    ... --layout fsdp --layout ulysses=2 --layout cfg_parallel   # several layouts in one job

``cases.safetensors`` holds ``latents`` `[B, C, F, H, W]`, ``context`` `[B, L, text_dim]`, optionally
``negative_context``, and any number of ``sigmas.<name>`` (`[B]` or `[B, F]`); the output holds
``velocity.<name>`` for each (and ``negative.<name>``, the velocity under the negative context, when it
is given: both branches in one `velocities` request, which CFG parallel splits), written by rank 0 only
(atomically), plus ``stats`` = [all-to-all bytes rank 0 sent in one forward, seconds in all-to-all and
seconds of that forward] for the median of ``--repeat`` forwards of the last case.
The single-process reference is the plain model on the same inputs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from pusa_fw_wan.weights import read_tensor_file, write_tensor_file

__all__ = ["main", "write_random_dit"]


def write_random_dit(directory: Path, seed: int = 3, **overrides: int) -> torch.nn.Module:
    """Save a random small `WanDiT` (dim 64, 4 heads, 2 layers) as an official-layout checkpoint.

    Args:
        directory: created if missing; gets ``config.json`` and ``diffusion_pytorch_model.safetensors``.
        seed: weight seed.
        **overrides: `WanConfig` fields to change.

    Returns:
        The model (eval mode), equal to what `WanDiT.from_pretrained(directory)` loads.
    """
    import json

    from pusa_fw.io.atomic import atomic_write_bytes

    from pusa_fw_wan.dit.config import WanConfig
    from pusa_fw_wan.dit.model import WanDiT
    from pusa_fw_wan.testing.tiny import randomise_parameters

    fields = {"dim": 64, "num_heads": 4, "num_layers": 2, "ffn_dim": 128, "freq_dim": 32, "text_dim": 32,
              "text_len": 16, **overrides}
    config = WanConfig(**fields)
    model = randomise_parameters(WanDiT(config), torch.Generator().manual_seed(seed)).eval()
    directory.mkdir(parents=True, exist_ok=True)
    write_tensor_file(directory / "diffusion_pytorch_model.safetensors", model.state_dict())
    atomic_write_bytes(directory / "config.json", json.dumps(config.to_official_json()).encode())
    return model


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="parallel_worker")
    parser.add_argument("--model", type=Path, required=True, help="WanDiT checkpoint directory")
    parser.add_argument("--cases", type=Path, required=True, help="inputs (.safetensors)")
    parser.add_argument("--out", type=Path, required=True, help="rank 0 writes the velocities here")
    parser.add_argument("--fsdp", action="store_true", help="shard the DiT with FSDP2 over all ranks")
    parser.add_argument("--ulysses", type=int, default=1, help="sequence-parallel ranks")
    parser.add_argument("--cfg-parallel", action="store_true", help="branches on two rank groups")
    parser.add_argument("--layout", action="append", default=[], metavar="SPEC",
                        help="run several layouts in one job, e.g. 'ulysses=2,fsdp' (outputs prefixed SPEC/)")
    parser.add_argument("--repeat", type=int, default=1, help="forward passes per case (timing)")
    parser.add_argument("--text-encoder", type=Path, default=None,
                        help="also encode --prompt with this umT5 file, plain and FSDP-sharded")
    parser.add_argument("--tokenizer", type=Path, default=None, help="tokenizer directory of --text-encoder")
    parser.add_argument("--prompt", action="append", default=[], help="prompts for --text-encoder")
    return parser.parse_args(argv)


def _layout(spec: str) -> Any:
    """``"ulysses=2,fsdp,cfg_parallel"`` -> `ParallelLayout`."""
    from pusa_fw_wan.parallel.layout import ParallelLayout

    fields: dict[str, Any] = {}
    for part in filter(None, spec.split(",")):
        name, _, value = part.partition("=")
        fields[name] = int(value) if value else True
    return ParallelLayout(**fields)


def _run_cases(backbone: Any, runtime: Any, cases: dict[str, torch.Tensor], repeat: int,
               prefix: str) -> dict[str, torch.Tensor]:
    """Velocities of every ``sigmas.<name>`` case, and the bytes/seconds of the median forward."""
    import time

    latents, context = cases["latents"], cases["context"]
    negative = cases.get("negative_context")
    outputs = {}
    forward_seconds = comm_seconds = 0.0
    for key, sigmas in cases.items():
        if not key.startswith("sigmas."):
            continue
        name = key.removeprefix("sigmas.")
        timings = []
        for _ in range(repeat):
            runtime.stats.reset()
            started = time.perf_counter()
            if negative is None:
                results = [backbone.velocity(latents, sigmas, context)]
            else:
                results = backbone.velocities(latents, sigmas, [context, negative])
            timings.append((time.perf_counter() - started, runtime.stats.seconds))
        forward_seconds, comm_seconds = sorted(timings)[len(timings) // 2]  # the median forward
        outputs[f"{prefix}velocity.{name}"] = results[0].contiguous()
        if negative is not None:
            outputs[f"{prefix}negative.{name}"] = results[1].contiguous()
    outputs[f"{prefix}stats"] = torch.tensor([float(runtime.stats.sent_bytes), comm_seconds, forward_seconds],
                                             dtype=torch.float64)
    return outputs


def _text_embeddings(args: argparse.Namespace, mesh: Any) -> dict[str, torch.Tensor]:
    """``text.plain.<i>`` and ``text.sharded.<i>``: each prompt encoded alone, before and after sharding."""
    from pusa_fw_wan.parallel.fsdp import shard_text_encoder
    from pusa_fw_wan.pipeline.loading import umt5_overrides
    from pusa_fw_wan.text.encoder import WanTextEncoder

    encoder = WanTextEncoder.from_pretrained(args.text_encoder, tokenizer=args.tokenizer, cache_dir=None,
                                             **umt5_overrides(args.text_encoder))
    outputs = {}
    with torch.no_grad():
        for index, prompt in enumerate(args.prompt):
            outputs[f"text.plain.{index}"] = encoder.encode([prompt])[0].contiguous()
        shard_text_encoder(encoder.model.requires_grad_(False), mesh)
        for index, prompt in enumerate(args.prompt):
            outputs[f"text.sharded.{index}"] = encoder.encode([prompt])[0].contiguous()
    return outputs


def main(argv: list[str] | None = None) -> None:
    """Run every case of ``--cases`` through the parallel DiT and save the velocities (rank 0)."""
    import torch.distributed as dist

    from pusa_fw_wan.dit.model import WanDiT
    from pusa_fw_wan.parallel.layout import ParallelLayout
    from pusa_fw_wan.parallel.runtime import init_parallel, parallelize_backbone

    args = _parse(argv)
    torch.set_num_threads(1)
    specs = args.layout or [""]
    layouts = ([_layout(spec) for spec in args.layout] if args.layout else
               [ParallelLayout(ulysses=args.ulysses, fsdp=args.fsdp, cfg_parallel=args.cfg_parallel)])
    runtime = None
    try:
        cases, _ = read_tensor_file(args.cases)
        outputs = {}
        for spec, layout in zip(specs, layouts):
            runtime = init_parallel(layout, timeout_s=120)  # the process group once, new meshes per layout
            model = WanDiT.from_pretrained(args.model).eval().requires_grad_(False)
            backbone = parallelize_backbone(model, runtime)
            with torch.no_grad():
                outputs.update(_run_cases(backbone, runtime, cases, args.repeat, f"{spec}/" if spec else ""))
        if args.text_encoder is not None and runtime is not None:
            outputs.update(_text_embeddings(args, runtime.shard_mesh))
        if runtime is not None and runtime.is_main:
            write_tensor_file(args.out, outputs)
        dist.barrier()
    finally:
        if runtime is not None:
            runtime.close()


if __name__ == "__main__":
    main()
