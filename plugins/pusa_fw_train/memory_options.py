"""The memory fields of a `TrainConfig` and the combinations of them that cannot work (refused when the
config is validated; `pusa_fw_train.memory` resolves them for a run; `pusa_fw_train.block_swap` and
`pusa_fw_train.activation_offload` say why block swap and activation offload need what they need)."""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["WeightsDtype", "check_memory_options"]

WeightsDtype = Literal["auto", "float32", "bfloat16", "float16", "float8_e4m3fn", "float8_e5m2"]
_FP8 = ("float8_e4m3fn", "float8_e5m2")


def check_memory_options(config: Any) -> None:
    """Raise `ValueError` (one line, naming the fields) for memory options that cannot work together.

    Args:
        config: a `TrainConfig` being validated (its mode, weights_dtype, block_swap,
            activation_offload, token_chunks, gradient_checkpointing and distributed).
    """
    if config.mode == "full" and config.weights_dtype not in ("auto", "float32"):
        raise ValueError(
            f"weights_dtype = {config.weights_dtype!r} stores a frozen base, but mode = 'full' trains every "
            "weight (float32 masters); use weights_dtype = 'auto' or 'float32', or mode = 'lora'"
        )
    if config.weights_dtype in _FP8 and config.distributed == "fsdp":
        raise ValueError(
            f"weights_dtype = {config.weights_dtype!r} with distributed = 'fsdp' is not supported (FSDP2 "
            "sharding of fp8 storage is not done); use bfloat16 or distributed = 'ddp'"
        )
    if config.activation_offload:
        _check_activation_offload(config)
    checkpointing_off = config.gradient_checkpointing is False or (
        config.gradient_checkpointing is None and config.mode != "lora"
    )
    if config.token_chunks > 1 and checkpointing_off:
        raise ValueError(
            f"token_chunks = {config.token_chunks} splits the checkpointed blocks' recomputation, but gradient "
            "checkpointing is off (false, or unset for mode = 'full'); set gradient_checkpointing = true or "
            "token_chunks = 1"
        )
    if not config.block_swap:
        return
    if config.mode != "lora":
        raise ValueError(
            "block_swap moves frozen weights only, but mode = 'full' trains every weight; set block_swap = 0"
        )
    if config.gradient_checkpointing is False:  # None: on for a LoRA (the model's ability is checked at build)
        raise ValueError(
            "block_swap needs gradient_checkpointing = true or unset (without it autograd keeps every "
            "swapped block's weights on the device until its backward, so nothing is saved)"
        )
    if config.distributed == "fsdp":
        raise ValueError(
            "block_swap cannot be combined with distributed = 'fsdp' (FSDP2 already shards the frozen "
            "weights and moves them itself); use distributed = 'ddp' or block_swap = 0"
        )


def _check_activation_offload(config: Any) -> None:
    checkpointing = config.gradient_checkpointing
    if checkpointing is False or (checkpointing is None and config.mode != "lora"):
        why = "is false" if checkpointing is False else "unset is off for mode = 'full'"
        raise ValueError(
            f"activation_offload needs gradient checkpointing, but gradient_checkpointing {why} (without it "
            "every activation of every block would be copied to the host); set gradient_checkpointing = true "
            "or activation_offload = false"
        )
    if config.distributed == "fsdp":
        raise ValueError(
            "activation_offload cannot be combined with distributed = 'fsdp' (not supported yet); use "
            "distributed = 'ddp' or activation_offload = false"
        )
