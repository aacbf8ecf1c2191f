"""Small training configs for tests and demos: a dim-32 Wan, tiny random latents, few steps."""

from __future__ import annotations

from typing import Any

__all__ = ["TINY_ARCHITECTURE", "tiny_config"]

from pusa_fw_train.config import TrainConfig, apply_overrides, validate_train_config

TINY_ARCHITECTURE = {
    "dim": 32,
    "ffn_dim": 64,
    "num_heads": 2,
    "num_layers": 2,
    "text_dim": 16,
    "freq_dim": 32,
    "text_len": 8,
}


def tiny_config(output_dir, **overrides: Any) -> TrainConfig:
    """A LoRA run of a tiny random Wan on 5 random samples `[16, 3, 4, 4]`; dotted overrides on top."""
    values = {
        "output_dir": str(output_dir),
        "max_steps": 6,
        "seed": 3,
        "mode": "lora",
        "model": {"architecture": TINY_ARCHITECTURE, "init_seed": 1},
        "lora": {"rank": 4, "alpha": 8.0},
        "data": {
            "source": "random",
            "batch_size": 2,
            "options": {"count": 5, "latent_shape": [16, 3, 4, 4], "context_shape": [4, 16], "seed": 2},
        },
        "optimizer": {"lr": 5e-3, "warmup_steps": 2, "schedule": "cosine"},
        "logging": {"tensorboard": False, "every": 1},
        # Pinned against the GPU-minded defaults (bf16, checkpointing for a LoRA, device auto): exact fp32
        # arithmetic, no recomputation, the CPU.
        "precision": "fp32",
        "gradient_checkpointing": False,
        "device": "cpu",
    }
    return validate_train_config(apply_overrides(values, overrides))
