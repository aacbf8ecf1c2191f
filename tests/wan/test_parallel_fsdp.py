"""`shard_dit` / `shard_text_encoder` argument checks (their sharded forwards are compared with the plain
model under torchrun in `test_parallel_velocity.py` and `test_parallel_generate.py`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from pusa_fw.errors import InputError

from pusa_fw_wan.parallel import shard_dit, shard_text_encoder
from pusa_fw_wan.testing.parallel_worker import write_random_dit


def test_shard_functions_reject_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="blocks"):
        shard_dit(nn.Linear(2, 2), mesh=None)
    with pytest.raises(InputError, match="DeviceMesh"):
        shard_dit(write_random_dit(tmp_path / "dit"), mesh="cpu")
    with pytest.raises(InputError, match="encoder.block"):
        shard_text_encoder(nn.Linear(2, 2), mesh=None)
