"""Block offload (`BlockOffload`) keeps its masters in one flat host buffer per block (no per-tensor pinned
rounding) and never lets the host run more than one block ahead of the device: after block i is launched
the host waits for block i - 1's completion event. On the CPU there are no events, so the test stands in a
device that is never done until waited on, and counts the blocks whose device copies may still be read."""

from __future__ import annotations

import pytest
import torch

from pusa_fw.host_memory import ALIGNMENT
from pusa_fw_wan import WanConfig, WanDiT
from pusa_fw_wan.dit.init import init_from_seed
from pusa_fw_wan.pipeline.offload import BlockOffload

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = WanConfig(dim=64, ffn_dim=128, num_heads=2, text_dim=32, text_len=8, num_layers=6)


def _model() -> WanDiT:
    model = WanDiT(CONFIG).eval()
    init_from_seed(model, torch.Generator().manual_seed(0))
    return model


def _inputs():
    generator = torch.Generator().manual_seed(5)
    return (torch.randn(1, 16, 3, 4, 6, generator=generator), torch.rand(1, 3, generator=generator),
            torch.randn(1, 6, 32, generator=generator))


class _Unfinished:
    """A completion event of a device that finishes a block only when the host waits for it."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.waited = False

    def synchronize(self) -> None:
        assert not self.waited, "each block's event is waited on once"
        self.waited = True
        self.log.append("wait")


@pytest.mark.parametrize(("prefetch", "bound"), [(True, 3), (False, 2)])
def test_the_host_stays_one_block_ahead_of_the_device(monkeypatch, prefetch, bound):
    log: list[str] = []
    events: list[_Unfinished] = []

    def unfinished(_self):
        events.append(_Unfinished(log))
        return events[-1]

    monkeypatch.setattr(BlockOffload, "_completion_event", unfinished)
    placement = BlockOffload(_model(), torch.device("cpu"), prefetch=prefetch)
    seen = []
    for block in placement.module.blocks:
        block.register_forward_hook(lambda *_: seen.append(placement.blocks_in_use))
    with torch.no_grad(), placement.active():
        for _ in range(2):
            placement.module(*_inputs())
    assert len(events) == 2 * CONFIG.num_layers
    assert all(event.waited for event in events), "every block's completion is waited on before the end"
    assert placement.peak_blocks_in_use == bound, f"at most {bound} blocks' copies held, not one per block"
    assert max(seen) <= bound and placement.blocks_in_use == 0


@pytest.mark.parametrize("prefetch", [True, False])
def test_without_a_device_lag_the_cpu_holds_the_running_and_the_next_block(prefetch):
    placement = BlockOffload(_model(), torch.device("cpu"), prefetch=prefetch)
    with torch.no_grad(), placement.active():
        placement.module(*_inputs())
    assert placement.peak_blocks_in_use == (2 if prefetch else 1)


def test_each_block_is_one_host_buffer_of_its_bytes_plus_padding_and_runs_bit_identically():
    model = _model()
    with torch.no_grad():
        resident = model(*_inputs())
    tensors = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    placement = BlockOffload(model, torch.device("cpu"))
    assert placement.pinned_bytes == 0, "nothing is pinned off CUDA"
    total = 0
    for residency in [placement.rest, *placement.blocks]:
        storages = {master.untyped_storage().data_ptr() for master in residency.masters}
        assert len(storages) == 1, "one buffer per block"
        data = sum(master.numel() * master.element_size() for master in residency.masters)
        assert data <= residency.arena.nbytes < data + ALIGNMENT * len(residency.masters)
        total += residency.arena.nbytes
    assert placement.host_bytes == total
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, tensors[name]), name
    with torch.no_grad(), placement.active():
        offloaded = model(*_inputs())
    assert torch.equal(offloaded, resident)
