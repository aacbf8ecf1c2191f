"""Past one device: FSDP2 weight sharding, Ulysses sequence parallelism and CFG parallel for the Wan DiT.

Everything here uses PyTorch's own engine (torchrun, `DeviceMesh`, FSDP2 `fully_shard`, `all_to_all`)
and is importable without a process group; the collectives only run inside a launched job.
"""

from pusa_fw_wan.parallel.cfg import CfgParallelBackbone
from pusa_fw_wan.parallel.fsdp import dit_blocks, shard_dit, shard_text_encoder
from pusa_fw_wan.parallel.layout import ParallelLayout
from pusa_fw_wan.parallel.runtime import ParallelRuntime, init_parallel, parallelize_backbone
from pusa_fw_wan.parallel.sequence import (
    SequenceParallel,
    disable_sequence_parallel,
    enable_sequence_parallel,
    frame_ranges,
)
from pusa_fw_wan.parallel.ulysses import CommStats, heads_to_sequence, sequence_to_heads, valid_sizes

__all__ = [
    "CfgParallelBackbone",
    "CommStats",
    "ParallelLayout",
    "ParallelRuntime",
    "SequenceParallel",
    "dit_blocks",
    "disable_sequence_parallel",
    "enable_sequence_parallel",
    "frame_ranges",
    "heads_to_sequence",
    "init_parallel",
    "parallelize_backbone",
    "sequence_to_heads",
    "shard_dit",
    "shard_text_encoder",
    "valid_sizes",
]
