"""Shard-only FSDP2 builds of the `Trainer` model, one torchrun launch (gloo, CPU, 2 ranks).

Usage (what `test_train_shard_load.py` runs):
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/train/shard_load_worker.py OUT

For every scenario of `SCENARIOS` (the configs come from `scenario_config`, which the test also uses for
its one-process reference), each rank builds the run's `Trainer` under ``distributed = "fsdp"`` and
writes ``OUT/<scenario>-rank<R>.json``: its load report (bytes read, kept and in full, the parameters
whose full tensor it held) and the local and full element counts of every parameter. Rank 0 also writes
``OUT/<scenario>.safetensors``: every parameter gathered (``full_tensor``, only here, for the comparison)
and every buffer, by name.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

SCENARIOS = ("lora_bf16_checkpoint", "lora_fp32_checkpoint_init_from", "full_random_init")


def write_checkpoint(out: Path) -> Path:
    """A tiny official-layout Wan checkpoint of `TINY_ARCHITECTURE` (float32, random), written once."""
    from pusa_fw_wan.dit.config import WanConfig
    from pusa_fw_wan.dit.model import WanDiT
    from pusa_fw_wan.testing.tiny import randomise_parameters
    from pusa_fw_wan.testing.train import TINY_ARCHITECTURE
    from pusa_fw_wan.weights import write_tensor_file

    directory = out / "checkpoint"
    if not (directory / "diffusion_pytorch_model.safetensors").is_file():
        model = randomise_parameters(WanDiT(WanConfig(**TINY_ARCHITECTURE)), torch.Generator().manual_seed(5))
        directory.mkdir(parents=True, exist_ok=True)
        write_tensor_file(directory / "diffusion_pytorch_model.safetensors", model.state_dict())
    return directory


def write_lora(out: Path) -> Path:
    """A random LoRA file (rank 4) on every large linear of the tiny model, written once."""
    from pusa_fw_wan.dit.config import WanConfig
    from pusa_fw_wan.dit.model import WanDiT
    from pusa_fw_wan.testing.storage_error import write_random_lora
    from pusa_fw_wan.testing.train import TINY_ARCHITECTURE

    path = out / "init_lora.safetensors"
    if not path.is_file():
        with torch.device("meta"):
            model = WanDiT(WanConfig(**TINY_ARCHITECTURE))
        write_random_lora(str(path), model, rank=4, seed=9)
    return path


def scenario_config(out: Path, name: str, distributed: str = "fsdp"):
    """The run of scenario `name` (the test builds it with ``distributed = "none"`` for the reference)."""
    from pusa_fw_wan.testing.train import tiny_config

    checkpoint = str(write_checkpoint(out))
    overrides: dict = {"distributed": distributed, "max_steps": 1}
    if name == "lora_bf16_checkpoint":
        overrides.update({"model.path": checkpoint, "model.architecture": None, "weights_dtype": "bfloat16"})
    elif name == "lora_fp32_checkpoint_init_from":
        overrides.update({"model.path": checkpoint, "model.architecture": None, "weights_dtype": "float32",
                          "lora.init_from": str(write_lora(out))})
    else:
        overrides["mode"] = "full"
    return tiny_config(out / f"{name}-{distributed}", **overrides)


def main(out: Path) -> None:
    from safetensors.torch import save_file

    from pusa_fw_train import Trainer

    torch.set_num_threads(1)
    for name in SCENARIOS:
        trainer = Trainer(scenario_config(out, name))
        model, report = trainer.model, trainer.load_report
        parameters = {}
        for key, parameter in model.named_parameters():
            local = parameter.to_local() if hasattr(parameter, "to_local") else parameter
            parameters[key] = [int(local.numel()), int(parameter.numel())]
        record = {
            "rank": trainer.context.rank,
            "bytes_read": report.bytes_read,
            "bytes_kept": report.bytes_kept,
            "bytes_full": report.bytes_full,
            "full_tensors": report.full_tensors,
            "parameters": parameters,
        }
        (out / f"{name}-rank{trainer.context.rank}.json").write_text(json.dumps(record))
        gathered = {key: parameter.full_tensor() for key, parameter in model.named_parameters()}
        gathered.update({key: buffer for key, buffer in model.named_buffers()})
        if trainer.context.is_main:
            tensors = {key: tensor.contiguous() for key, tensor in gathered.items()}
            save_file(tensors, str(out / f"{name}.safetensors"))
        trainer.context.barrier()
    trainer.context.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
