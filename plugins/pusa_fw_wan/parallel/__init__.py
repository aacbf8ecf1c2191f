"""Past one device: FSDP2 weight sharding and Ulysses sequence parallelism for the Wan DiT.

Everything here uses PyTorch's own engine (torchrun, `DeviceMesh`, FSDP2 `fully_shard`, `all_to_all`)
and is importable without a process group; the collectives only run inside a launched job.
"""

from pusa_fw_wan.parallel.fsdp import dit_blocks, shard_dit

__all__ = ["dit_blocks", "shard_dit"]
