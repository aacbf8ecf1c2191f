"""``generate --fsdp --lora`` loads shard-only: one torchrun launch (gloo, CPU, 2 ranks).

Usage (what `test_parallel_generate_lora.py` runs):
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/wan/fsdp_lora_worker.py OUT

For every case of `CASES` (compute dtype, storage dtype, checkpoint), each rank loads the tiny DiT with
`load_sharded_dit(..., loras=lora_specs(OUT))` and writes ``OUT/<case>-rank<R>.json`` (its load report)
and ``OUT/<case>-rank<R>.safetensors``: its local shard of every parameter (dim-0 rows, the test concatenates
them) and the velocity of `probe_inputs`. Last, the ranks run ``pusa-fw generate --fsdp`` with both
LoRAs (``generate_args``), which writes ``OUT/fsdp.mp4`` and its latents.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

# case -> (compute dtype, --weights-dtype, checkpoint folder under OUT)
CASES = {
    "float32": ("float32", "auto", "tiny"),  # plain fp32 linears: deltas merged into the rows
    "bf16_storage": ("float32", "bfloat16", "tiny"),  # low precision: factors merged at compute time
    "bfloat16": ("bfloat16", "auto", "tiny"),  # plain bf16 linears: fp32 deltas cast to bf16
    "fp8_file": ("float32", "float8_e4m3fn", "tiny_fp8"),  # scaled-fp8 file, bits and row scales kept
}
STRENGTHS = {"comfy_lora.safetensors": 1.4, "diffusers_lora.safetensors": 0.7}
RANK = 3
DIFFUSERS_NAME = {  # official module -> diffusers name (written by hand, wan_reference.md §2.2)
    "blocks.0.self_attn.q": "blocks.0.attn1.to_q",
    "blocks.0.self_attn.o": "blocks.0.attn1.to_out.0",
    "blocks.1.cross_attn.k": "blocks.1.attn2.to_k",
    "blocks.1.ffn.0": "blocks.1.ffn.net.0.proj",
    "head.head": "proj_out",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "patch_embedding": "patch_embedding",
}


def _pair(module: torch.nn.Module, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random A `[r, in(, k...)]` and B `[out, r(, 1...)]` for a Linear or the Conv3d patch embedding."""
    if isinstance(module, torch.nn.Conv3d):
        down = torch.randn(RANK, module.in_channels, *module.kernel_size, generator=generator) * 0.2
        return down, torch.randn(module.out_channels, RANK, 1, 1, 1, generator=generator) * 0.2
    down = torch.randn(RANK, module.in_features, generator=generator) * 0.2
    return down, torch.randn(module.out_features, RANK, generator=generator) * 0.2


def write_loras(out: Path, model_dir: Path) -> None:
    """Two LoRA files in official layouts, written once before the ranks start.

    ``comfy_lora``: ``diffusion_model.`` prefix, ``lora_down``/``lora_up`` with per-module ``alpha`` on every
    large linear of block 0 and the head, plus ``diff`` / ``diff_b`` on a norm, a modulation and biases.
    ``diffusers_lora``: diffusers names with a metadata ``lora_alpha``, a conv (patch embedding) and a
    ``lora_B.bias``.
    """
    from safetensors.torch import save_file

    from pusa_fw_wan.dit.checkpoint import open_wan_dit
    from pusa_fw_wan.dit.storage import large_linear_names

    model, _ = open_wan_dit(model_dir)
    generator = torch.Generator().manual_seed(11)
    tensors: dict[str, torch.Tensor] = {}
    targets = [name for name in large_linear_names(model) if name.startswith("blocks.0.")] + ["head.head"]
    for index, name in enumerate(targets):
        down, up = _pair(model.get_submodule(name), generator)
        tensors[f"diffusion_model.{name}.lora_down.weight"] = down
        tensors[f"diffusion_model.{name}.lora_up.weight"] = up
        tensors[f"diffusion_model.{name}.alpha"] = torch.tensor(1.0 + index % 3)
    parameters = dict(model.named_parameters())
    diffs = {"head.head.diff_b": "head.head.bias", "blocks.1.norm3.diff": "blocks.1.norm3.weight",
             "blocks.0.modulation.diff": "blocks.0.modulation",
             "blocks.0.self_attn.k.diff_b": "blocks.0.self_attn.k.bias"}
    for key, parameter in diffs.items():
        shape = parameters[parameter].shape
        tensors[f"diffusion_model.{key}"] = torch.randn(shape, generator=generator) * 0.1
    save_file(tensors, str(out / "comfy_lora.safetensors"))
    tensors = {}
    for original, diffusers in DIFFUSERS_NAME.items():
        down, up = _pair(model.get_submodule(original), generator)
        tensors[f"transformer.{diffusers}.lora_A.weight"] = down
        tensors[f"transformer.{diffusers}.lora_B.weight"] = up
    tensors["transformer.blocks.0.attn1.to_out.0.lora_B.bias"] = torch.randn(
        model.get_submodule("blocks.0.self_attn.o").out_features, generator=generator)
    metadata = {"lora_adapter_metadata": f'{{"r": {RANK}, "lora_alpha": 1.5}}'}
    save_file(tensors, str(out / "diffusers_lora.safetensors"), metadata=metadata)


def lora_specs(out: Path) -> list:
    from pusa_fw_wan.lora.apply import LoraSpec

    return [LoraSpec(out / name, strength=strength) for name, strength in STRENGTHS.items()]


def probe_inputs(text_dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latents `[1, 16, 2, 4, 4]`, per-frame sigmas `[1, 2]` and a context `[1, 5, text_dim]`."""
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 16, 2, 4, 4, generator=generator)
    return latents, torch.tensor([[0.3, 0.9]]), torch.randn(1, 5, text_dim, generator=generator)


def generate_args(out: Path, model_args: list[str], latents: Path, video: Path) -> list[str]:
    """``pusa-fw generate`` options of the CLI comparison (the test runs them in one process)."""
    loras = [item for name, strength in STRENGTHS.items() for item in ("--lora", f"{out / name}:{strength}")]
    return ["generate", *model_args, "--height", "32", "--width", "48", "--num-steps", "2", "--seed", "3",
            "--device", "cpu", "--prompt", "a cat on the beach", "--task", "t2v", "--num-frames", "5",
            "--cfg", "3", *loras, "--save-latents", str(latents), "--out", str(video)]


def main(out: Path) -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file
    from torch.distributed.device_mesh import init_device_mesh

    from pusa_fw.cli import main as cli
    from pusa_fw_wan.parallel.fsdp import load_sharded_dit

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for case, (dtype, weights_dtype, folder) in CASES.items():
        compute = getattr(torch, dtype)
        model, report = load_sharded_dit(out / folder, mesh, "cpu", dtype=compute,
                                         weights_dtype=weights_dtype, loras=lora_specs(out))
        with torch.no_grad():
            velocity = model(*probe_inputs(model.config.text_dim))
        parameters = {}
        for key, parameter in model.named_parameters():
            local = parameter.to_local()
            parameters[key] = [int(local.numel()), int(parameter.numel())]
        record = {"bytes_read": report.bytes_read, "bytes_kept": report.bytes_kept,
                  "bytes_full": report.bytes_full, "full_tensors": report.full_tensors,
                  "lora_bytes_read": report.lora_bytes_read, "parameters": parameters,
                  "lora_modules": sorted(m for lora in report.lora_report.loras for m in lora.modules)}
        (out / f"{case}-rank{rank}.json").write_text(json.dumps(record))
        shards = {key: parameter.to_local().contiguous() for key, parameter in model.named_parameters()}
        save_file({**shards, "velocity": velocity.contiguous()}, str(out / f"{case}-rank{rank}.safetensors"))
        dist.barrier()
    tiny = json.loads((out / "tiny_args.json").read_text())
    # run_generate starts no second process group (one is running) and destroys this one at its end
    status = cli(generate_args(out, tiny, out / "fsdp.safetensors", out / "fsdp.mp4") + ["--fsdp"])
    if status != 0:
        raise SystemExit(status)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
