"""FSDP2 runs of the `Trainer` under the GPU-minded memory options, one torchrun launch (gloo, CPU).

Usage (what `test_train_memory.py` runs):
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/train/train_memory_worker.py OUT

Two FSDP2 scenarios of a tiny Wan, 3 steps each, ``precision = "bf16"`` (FSDP2's MixedPrecisionPolicy: bf16
parameters, fp32 gradient reduction): a LoRA on a bfloat16 frozen base sharded with ``distributed = "fsdp"``,
and a full fine-tune; and a DDP LoRA run with ``block_swap = 1`` in fp32 (compared by the test with one
process without swap). Every rank writes ``OUT/<scenario>-rank<R>.json``: its local shard sizes of one frozen
(or trained) block weight against the full size, the storage dtypes, the dtypes of the trained tensors and
their AdamW moments, the FSDP mixed-precision dtypes, and the logged losses.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

SCENARIOS = {"lora_bf16_base": "lora", "full": "full"}
SWAP_SCENARIO = "ddp_block_swap"


def swap_config(out: Path, strategy: str = "ddp", block_swap: int = 1):
    """A DDP LoRA run with `block_swap` (the test's reference: strategy "none", block_swap 0)."""
    from pusa_fw_wan.testing.train import tiny_config

    overrides = {"distributed": strategy, "max_steps": 3, "data.batch_size": 2, "block_swap": block_swap}
    return tiny_config(out / f"{SWAP_SCENARIO}-{strategy}", gradient_checkpointing=True, **overrides)


def scenario_config(out: Path, name: str):
    """The config of scenario `name` (FSDP2, bf16 precision; the LoRA one on a bfloat16 base)."""
    from pusa_fw_wan.testing.train import tiny_config

    mode = SCENARIOS[name]
    overrides = {"distributed": "fsdp", "precision": "bf16", "max_steps": 3, "data.batch_size": 2}
    if mode == "lora":
        overrides["weights_dtype"] = "bfloat16"
    return tiny_config(out / name, mode=mode, **overrides)


def _local_numel(tensor: torch.Tensor) -> int:
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return int(local.numel())


def main(out: Path) -> None:
    from torch.distributed.fsdp import FSDPModule

    from pusa_fw_train import Trainer

    torch.set_num_threads(1)
    for name in SCENARIOS:
        trainer = Trainer(scenario_config(out, name))
        result = trainer.run()
        model = trainer.model
        base = model.blocks[0].ffn[0]
        base = base.base_layer if hasattr(base, "base_layer") else base
        policy = model._get_fsdp_state()._mp_policy if isinstance(model, FSDPModule) else None
        states = trainer.optimizer.state.values()
        moments = [state[key] for state in states for key in ("exp_avg", "exp_avg_sq")]
        report = {
            "rank": trainer.context.rank,
            "sharded": isinstance(model, FSDPModule),
            "block_weight_local": _local_numel(base.weight),
            "block_weight_full": int(base.weight.numel()),
            "block_weight_dtype": str(base.weight.dtype),
            "trained_dtypes": sorted({str(tensor.dtype) for tensor in trainer.tensors.values()}),
            "moment_dtypes": sorted({str(moment.dtype) for moment in moments}),
            "param_dtype": str(policy.param_dtype) if policy is not None else None,
            "reduce_dtype": str(policy.reduce_dtype) if policy is not None else None,
            "loss": result.metrics.get("loss"),
        }
        (out / f"{name}-rank{trainer.context.rank}.json").write_text(json.dumps(report))
        trainer.context.barrier()
    swapped = Trainer(swap_config(out))
    swapped.run()
    swapped.context.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
