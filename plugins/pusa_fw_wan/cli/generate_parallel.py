"""``pusa-fw generate`` under torchrun: the layout flags (``--ulysses``, ``--fsdp``, ``--cfg-parallel``).

Every check that can fail runs before the process group starts and before any collective, on every
rank alike (they all see the same flags, plan and checkpoint), so a bad layout is the same one-line
error on every rank and exit status 2, never a hang.

Under ``--fsdp`` a Wan DiT checkpoint is loaded shard-only (`sharded_dit`): each rank builds the model on
meta, shards it and reads only its own rows of every tensor, so no rank holds the whole DiT. ``--lora``
files (small) are read whole by every rank and merged row by row as the rows are filled, exactly as one
process merges them (`pusa_fw_wan.parallel.shard_lora`; layers stored low-precision keep the factors and
merge per layer at compute time, as without ``--fsdp``). A registered model format is loaded whole on
every rank's CPU and sharded after. fp8 storage (``--weights-dtype float8_e4m3fn``/``float8_e5m2``) with
``--fsdp`` needs a file already stored in that fp8 dtype: its bits and scales are kept; quantising another
file needs each whole tensor's amax, which no rank holds, so that is refused in one line before the
process group starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pusa_fw.errors import CheckpointError, InputError
from pusa_fw.plan import Plan

from pusa_fw_wan.parallel.layout import ParallelLayout
from pusa_fw_wan.parallel.runtime import environment_world_size

__all__ = ["check_parallel_run", "parallel_layout", "sharded_dit"]


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
    if layout.fsdp and config.weights_dtype.startswith("float8"):
        _check_fp8_shards(config, dit_path)
    if layout.fsdp and config.lora and dit_path is not None:
        _check_loras(config, dit_path)


def _check_loras(config: Any, dit_path: Path) -> None:
    """Under --fsdp, read every --lora and match it against the DiT's meta model (headers only), so a LoRA
    that does not fit is the same one-line error on every rank before the process group starts."""
    from pusa_fw_wan.dit.checkpoint import open_wan_dit
    from pusa_fw_wan.lora.apply import LoraSpec
    from pusa_fw_wan.parallel.shard_lora import ShardLoras

    try:
        model, _ = open_wan_dit(dit_path, weights_dtype=config.weights_dtype)
    except CheckpointError:
        return  # not a Wan DiT checkpoint (a registered format): loaded whole, its LoRAs checked there
    specs = [LoraSpec(Path(item.path).expanduser(), strength=item.strength) for item in config.lora]
    ShardLoras(model, specs)


def _check_fp8_shards(config: Any, dit_path: Path | None) -> None:
    """fp8 under --fsdp: only a shard-only load of a file stored in that fp8 dtype (module docstring)."""
    wanted = config.weights_dtype
    from pusa_fw_wan.dit.checkpoint import open_wan_dit

    try:
        _, source = open_wan_dit(dit_path, weights_dtype=wanted) if dit_path is not None else (None, None)
    except CheckpointError:
        source = None
    found = sorted(str(dtype).replace("torch.", "") for dtype in source.linear_dtypes) if source else ["?"]
    if found != [wanted]:
        raise InputError(
            f"--weights-dtype {wanted} with --fsdp needs a Wan DiT file stored in {wanted} (scaled fp8), "
            f"but its large linears are {', '.join(found)}: quantising needs each whole tensor, which no "
            "rank holds; use --weights-dtype bfloat16 with --fsdp, or drop --fsdp"
        )


def sharded_dit(config: Any, paths: Any, loras: list[Any], runtime: Any, dtype: Any) -> Any:
    """The DiT loaded shard-only on this rank under ``--fsdp`` (module docstring), with `loras`
    (``(path, strength)``) merged, and its `ShardLoadReport`; None when it is to be loaded whole.

    Every rank calls it after the process group started; it reads only this rank's rows (and every LoRA
    file whole).
    """
    if runtime is None or not runtime.layout.fsdp or paths.format is not None:
        return None
    from pusa_fw_wan.lora.apply import LoraSpec
    from pusa_fw_wan.parallel.fsdp import load_sharded_dit

    specs = [LoraSpec(Path(path).expanduser(), strength=strength) for path, strength in loras]
    return load_sharded_dit(paths.dit, runtime.shard_mesh, runtime.device, dtype=dtype,
                            weights_dtype=config.weights_dtype, loras=specs)
