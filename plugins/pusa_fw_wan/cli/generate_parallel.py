"""``pusa-fw generate`` under torchrun: the layout flags (``--ulysses``, ``--fsdp``, ``--cfg-parallel``).

Every check that can fail runs before the process group starts and before any collective, on every
rank alike (they all see the same flags, plan and checkpoint), so a bad layout is the same one-line
error on every rank and exit status 2, never a hang.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pusa_fw.errors import CheckpointError, InputError
from pusa_fw.plan import Plan

from pusa_fw_wan.parallel.layout import ParallelLayout
from pusa_fw_wan.parallel.runtime import environment_world_size

__all__ = ["check_parallel_run", "parallel_layout"]


def parallel_layout(config: Any) -> ParallelLayout | None:
    """The layout of a `GenerateConfig`, checked against torchrun's ``WORLD_SIZE``; None for one process.

    Raises:
        InputError: the layout does not multiply to the world size.
    """
    layout = ParallelLayout(ulysses=config.ulysses, fsdp=config.fsdp, cfg_parallel=config.cfg_parallel,
                            fsdp_text=config.fsdp_text)
    world_size = environment_world_size()
    if not layout.is_parallel and world_size == 1:
        return None
    layout.check_world(world_size)
    return layout


def smallest_window(plan: Plan) -> int:
    """The fewest latent frames any forward pass of ``plan`` sees."""
    widths = plan.windows[:, 1] - plan.windows[:, 0]
    return int(widths.min())


def _dit_heads(dit_path: Path | None) -> int | None:
    """Attention heads of the DiT checkpoint (header read only), or None when it is not a Wan DiT."""
    if dit_path is None:
        return None
    from pusa_fw_wan.dit.checkpoint import read_wan_config

    try:
        return read_wan_config(dit_path).num_heads
    except (CheckpointError, OSError, ValueError):
        return None


def check_parallel_run(layout: ParallelLayout, config: Any, plan: Plan, dit_path: Path | None) -> None:
    """Heads divisible by ``--ulysses``, no more ranks than window frames, options that combine.

    Raises:
        InputError: one line naming the value and the fix.
    """
    if config.offload != "none":
        raise InputError(
            f"--offload {config.offload} cannot be combined with --ulysses/--fsdp/--cfg-parallel; use "
            "--fsdp to fit a large DiT instead (or --offload none)"
        )
    heads = _dit_heads(dit_path)
    layout.check_model(heads if heads is not None else layout.ulysses, smallest_window(plan), config.cfg)
