"""The distributed loss (`global_mean_loss`) and the batch copies read nothing on the host (review F7).

`.item()` after the forward blocks the CPU until the forward has run, so the backward is enqueued late;
the loss must stay a device computation and equal, bit for bit, the old ``local_sum * (W / count)`` with
the count read as a Python float. The collated batch and the drawn noise go to a CUDA device from pinned
memory with ``non_blocking=True`` (CUDA itself cannot run here: the copy path is checked by recording the
calls it makes).
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from pusa_fw.errors import InputError
from pusa_fw_train import step
from pusa_fw_train.sharding import RankShard, global_mean_loss, shard_global_batch


def old_formula(terms: torch.Tensor, shard: RankShard, counted: torch.Tensor, ranks_alike: int) -> torch.Tensor:
    """The loss as it was computed with a host read of the all-reduced count."""
    real = shard.real_mask().reshape(-1, *([1] * (terms.ndim - 1)))
    counted = counted & real
    local_sum = torch.where(counted, terms, torch.zeros_like(terms)).sum(dtype=torch.float32)
    count = float(counted.sum()) * ranks_alike
    return local_sum * (shard.world_size / count)


@pytest.fixture
def two_alike_ranks(monkeypatch: pytest.MonkeyPatch) -> int:
    """A process group whose all-reduce sums two ranks holding the same count (no real group needed)."""
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, *args, **kwargs: tensor.mul_(2))
    return 2


@pytest.fixture
def no_item(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: torch.Tensor) -> float:
        raise AssertionError("the loss read a tensor on the host (.item())")

    monkeypatch.setattr(torch.Tensor, "item", refuse)
    monkeypatch.setattr(torch.Tensor, "tolist", refuse)


@pytest.mark.parametrize("batch,world,frames,seed", [(3, 2, 5, 0), (5, 2, 7, 1), (7, 2, 3, 2), (4, 2, 11, 3)])
def test_the_loss_equals_the_host_read_formula_bit_for_bit(two_alike_ranks, batch, world, frames, seed) -> None:
    generator = torch.Generator().manual_seed(seed)
    shard = shard_global_batch(list(range(batch)), rank=world - 1, world_size=world)
    rows = len(shard.indices)
    terms = torch.rand(rows, frames, generator=generator, dtype=torch.float32) * 3.7
    counted = torch.rand(rows, frames, generator=generator) > 0.3
    counted[0, 0] = True
    want = old_formula(terms, shard, counted, two_alike_ranks)
    got = global_mean_loss(terms, shard, counted)
    assert got.dtype == torch.float32 and got.shape == ()
    assert torch.equal(got, want), (got, want)


def test_the_loss_reads_nothing_on_the_host(two_alike_ranks, no_item) -> None:
    shard = shard_global_batch([4, 1, 2], rank=1, world_size=2)  # one real row and one padding row
    terms = torch.rand(2, 6, requires_grad=True)
    loss = global_mean_loss(terms, shard, torch.ones(2, 6, dtype=torch.bool))
    loss.backward()
    assert terms.grad is not None and torch.count_nonzero(terms.grad[1]) == 0  # padding does not count


def test_single_process_shard_loss_is_the_masked_mean(no_item) -> None:
    shard = shard_global_batch([0, 1], rank=0, world_size=1)
    terms = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    counted = torch.tensor([[True, False, True], [True, True, False]])
    assert torch.equal(global_mean_loss(terms, shard, counted), torch.tensor((1 + 3 + 4 + 5) / 4.0))


def test_a_batch_with_no_counted_frame_is_one_line() -> None:
    shard = shard_global_batch([0, 1], rank=0, world_size=1)
    with pytest.raises(InputError, match="no frame of the global batch counts") as error:
        global_mean_loss(torch.ones(2, 3), shard, torch.zeros(2, 3, dtype=torch.bool))
    assert "\n" not in str(error.value)


def test_a_hand_made_shard_with_padding_in_between_still_drops_it() -> None:
    shard = RankShard(indices=(3, 0, 5), is_real=(True, False, True), global_size=2, world_size=1)
    terms = torch.tensor([[2.0], [100.0], [4.0]])
    assert torch.equal(global_mean_loss(terms, shard), torch.tensor(3.0))


def _samples(count: int) -> list:
    from pusa_fw.training_data import TrainingSample

    generator = torch.Generator().manual_seed(11)
    return [TrainingSample(latents=torch.randn(4, 3, 2, 5, generator=generator).to(torch.bfloat16),
                           context=torch.randn(6 + index, 8, generator=generator)) for index in range(count)]


def _batch_and_draws(device: torch.device) -> tuple[step.Batch, step.StepDraws]:
    from pusa_fw.ptss import PTSS

    batch = step.collate(_samples(3), [5, 2, 9], device)
    draws = step.draw_for_batch(PTSS(), batch.latents.shape, [5, 2, 9], 3, 4, 1, device)
    return batch, draws


def test_cuda_copies_are_staged_in_pinned_memory_and_do_not_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA path, run on the CPU: pinning and non-blocking flags are recorded, values must not change."""
    want_batch, want_draws = _batch_and_draws(torch.device("cpu"))
    pinned: list[tuple[int, ...]] = []
    copies: list[bool] = []
    original_to = torch.Tensor.to

    def pinned_empty(shape, dtype):
        pinned.append(tuple(shape))
        return torch.empty(shape, dtype=dtype)

    def recording_to(self, *args, **kwargs):
        if (args and isinstance(args[0], torch.device)) or "device" in kwargs:  # a transfer, not a cast
            copies.append(bool(kwargs.get("non_blocking", False)))
        return original_to(self, *args, **kwargs)

    monkeypatch.setattr(step, "_staged", lambda device: True)
    monkeypatch.setattr(step, "_pinned_empty", pinned_empty)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pinned.append(tuple(self.shape)) or self)
    monkeypatch.setattr(torch.Tensor, "is_pinned", lambda self: False)
    monkeypatch.setattr(torch.Tensor, "to", recording_to)
    batch, draws = _batch_and_draws(torch.device("cpu"))
    monkeypatch.undo()
    assert (3, 4, 3, 2, 5) in pinned  # latents stacked straight into pinned memory
    assert len(copies) == 5 and all(copies), copies  # latents, context, sigmas, eps, loss mask
    for got, want in [(batch.latents, want_batch.latents), (batch.context, want_batch.context),
                      (draws.sigmas, want_draws.sigmas), (draws.eps, want_draws.eps),
                      (draws.loss_mask, want_draws.loss_mask)]:
        assert got.dtype == want.dtype and torch.equal(got, want)
