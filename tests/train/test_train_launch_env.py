"""`rank_device` under the GPU layouts a launcher produces (CUDA calls monkeypatched; no GPU here).

Review F13: with per-task GPU binding (SLURM ``--gpus-per-task=1``, ``CUDA_VISIBLE_DEVICES`` per rank) every
rank sees one GPU while LOCAL_RANK runs 0..7; each must take its GPU (device 0), not be refused.
"""

from __future__ import annotations

import pytest
import torch

from pusa_fw.errors import InputError
from pusa_fw_train.launch_env import process_group_device, rank_device


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch):
    current: list[int] = []

    def visible(count: int) -> list[int]:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", lambda index: current.append(int(index)))
        return current

    return visible


@pytest.mark.parametrize("local_rank", [0, 1, 3, 7])
def test_a_rank_bound_to_one_gpu_takes_it_whatever_its_local_rank(gpus, local_rank: int) -> None:
    current = gpus(1)
    assert rank_device(local_rank) == torch.device("cuda", 0)
    assert current == [0]


@pytest.mark.parametrize("local_rank", [0, 5, 7])
def test_several_visible_gpus_are_indexed_by_the_local_rank(gpus, local_rank: int) -> None:
    current = gpus(8)
    assert rank_device(local_rank) == torch.device("cuda", local_rank)
    assert current == [local_rank]


def test_more_ranks_than_several_visible_gpus_is_one_line(gpus) -> None:
    current = gpus(2)
    with pytest.raises(InputError, match="local rank 3 has no GPU: 2 are visible") as error:
        rank_device(3)
    assert "\n" not in str(error.value)
    assert current == []


def test_without_cuda_the_rank_computes_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert rank_device(5) == torch.device("cpu")


def test_the_process_group_is_bound_to_a_cuda_device_only() -> None:
    assert process_group_device(torch.device("cuda", 3)) == {"device_id": torch.device("cuda", 3)}
    assert process_group_device(torch.device("cpu")) == {}
