"""Block swap with checkpointed token chunks (``block_swap`` + ``token_chunks > 1``): the chunks are
checkpoints nested in the block's own, recomputed in the backward after the block's recomputation has
returned; they must read the swapped block's device copies, never its host masters (on CUDA a master read
is ``F.linear(cuda_x, cpu_weight)``, a crash). On the CPU a master read gives the same numbers, so the test
watches every aten op for an argument stored in a master's memory instead."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from pusa_fw_train.activation_offload import ActivationOffload
from pusa_fw_train.block_swap import BlockSwap
from pusa_fw_wan import WanConfig, WanDiT
from pusa_fw_wan.dit.init import init_from_seed

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = WanConfig(dim=64, ffn_dim=128, num_heads=2, text_dim=32, text_len=8, num_layers=3)
TRAINABLE = ("ffn.0.weight", "ffn.2.weight", "o.weight")  # a LoRA-like subset; the rest is frozen


def _model(chunks: int) -> WanDiT:
    model = WanDiT(CONFIG)
    init_from_seed(model, torch.Generator().manual_seed(0))
    model.train()
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.endswith(TRAINABLE))
    model.enable_gradient_checkpointing(True, token_chunks=chunks)
    return model


def _inputs():
    generator = torch.Generator().manual_seed(5)
    latents = torch.randn(2, 16, 5, 4, 6, generator=generator)
    sigmas = torch.rand(2, 5, generator=generator)
    context = torch.randn(2, 6, 32, generator=generator)
    return latents, sigmas, context


def _step(model: WanDiT) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    loss = model(*_inputs()).square().mean()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


class _MasterReads(TorchDispatchMode):
    """Records every aten op (but the swap's own host-to-device copies) that reads a master's memory."""

    def __init__(self, storages: set[int]) -> None:
        super().__init__()
        self.storages = storages
        self.copying = False
        self.reads: list[str] = []
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        if not self.copying:
            for leaf in tree_leaves((args, kwargs)):
                if isinstance(leaf, torch.Tensor) and leaf.untyped_storage().data_ptr() in self.storages:
                    self.reads.append(str(func))
        return func(*args, **kwargs)


def master_reads(swap_class: type, chunks: int, swapped: int, monkeypatch) -> tuple[list[str], int]:
    """(ops that read a master during forward + backward, ops seen) for a swap of `swapped` blocks."""
    model = _model(chunks)
    swap = swap_class(model, swapped, "cpu")
    storages = {master.untyped_storage().data_ptr() for block in swap.blocks for master in block.masters}
    watch = _MasterReads(storages)
    copy = swap_class._copy

    def watched_copy(self, position):
        watch.copying = True
        try:
            return copy(self, position)
        finally:
            watch.copying = False

    monkeypatch.setattr(swap_class, "_copy", watched_copy)
    with watch:
        model(*_inputs()).square().mean().backward()
    return watch.reads, watch.ops


@pytest.mark.parametrize("swapped", [1, 3])
def test_every_recomputed_chunk_reads_the_device_copies_not_the_masters(swapped, monkeypatch):
    reads, ops = master_reads(BlockSwap, 2, swapped, monkeypatch)
    assert ops > 1000, "the mode must see the forward and the backward"
    assert reads == [], f"{len(reads)} ops read a host master, e.g. {reads[:5]}"


@pytest.mark.parametrize("offload", [False, True])
@pytest.mark.parametrize("chunks", [2, 3])
def test_block_swap_with_token_chunks_is_bit_identical_to_no_swap(chunks, offload):
    model = _model(chunks)
    if offload:
        ActivationOffload(model, "cpu", min_bytes=1)
    reference = _step(model)
    for swapped in range(1, CONFIG.num_layers + 1):
        model = _model(chunks)
        swap = BlockSwap(model, swapped, "cpu")
        if offload:
            ActivationOffload(model, "cpu", min_bytes=1)
        for _ in range(2):  # a second step starts from the state the first one left
            loss, grads = _step(model)
            assert torch.equal(loss, reference[0]), (swapped, chunks)
            assert grads.keys() == reference[1].keys() and grads
            for name, grad in grads.items():
                assert torch.equal(grad, reference[1][name]), (swapped, chunks, name)
        assert swap.copies == 2 * 2 * swapped


def test_at_most_two_swapped_blocks_are_on_the_device_and_none_after_the_backward():
    model = _model(2)
    swap = BlockSwap(model, 3, "cpu")
    per_block = swap.blocks[0].bytes()
    assert all(block.bytes() == per_block for block in swap.blocks)
    loss = model(*_inputs()).square().mean()
    assert swap.live_bytes == per_block, "after the forward: the last block, prefetched for the backward"
    loss.backward()
    del loss
    assert per_block < swap.peak_live_bytes <= 2 * per_block
    assert swap.live_bytes == 0, "the backward's end puts the masters back; nothing is left on the device"
    for position, index in enumerate(swap.indices):
        for (table, name), master in zip(swap.blocks[position].slots, swap.blocks[position].masters):
            assert table[name] is master, f"block {index}: {name} is not its master after the backward"


def test_an_eval_forward_puts_the_masters_back_when_it_ends():
    model = _model(2)
    swap = BlockSwap(model, 2, "cpu")
    with torch.no_grad():
        model(*_inputs())
    assert swap.live_bytes == 0 and swap._holding is None
    assert model.blocks[2].cross_attn.q.weight is swap.blocks[1].masters[
        swap.blocks[1].names.index("blocks.2.cross_attn.q.weight")]
