"""Flat host buffers (`pusa_fw.host_memory`): a set of tensors as aligned views of one buffer, copied to
the device in one copy; and what that saves against PyTorch's per-tensor power-of-two pinned blocks, for the
real shapes of a Wan2.1 14B block."""

from __future__ import annotations

import pytest
import torch

from pusa_fw.errors import InputError
from pusa_fw.host_memory import ALIGNMENT, HostArena, aligned_layout, power_of_two_pinned_bytes, tensor_bytes
from pusa_fw_wan.dit.blocks import AttentionBlock


def _tensors() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return [
        torch.randn(7, 5, generator=generator),
        torch.randn(3, generator=generator).to(torch.bfloat16),
        torch.randn(4, 4, generator=generator).to(torch.float8_e4m3fn),
        torch.tensor(2.5, dtype=torch.float64),
        torch.zeros(0, 3),
        torch.randint(0, 9, (5,), generator=generator),
    ]


def _bytes(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(-1).view(torch.uint8)


def test_the_arena_holds_every_tensor_as_an_aligned_view_of_one_buffer():
    tensors = _tensors()
    arena = HostArena(tensors, pin=False)
    sizes = [tensor.numel() * tensor.element_size() for tensor in tensors]
    assert arena.data_bytes == sum(sizes)
    assert arena.data_bytes <= arena.nbytes < arena.data_bytes + ALIGNMENT * len(tensors)
    storage = arena.host.buffer.untyped_storage().data_ptr()
    for view, tensor, offset in zip(arena.views, tensors, arena.offsets, strict=True):
        assert offset % ALIGNMENT == 0
        assert view.dtype == tensor.dtype and view.shape == tensor.shape and view.is_contiguous()
        assert view.untyped_storage().data_ptr() == storage
        assert torch.equal(_bytes(view), _bytes(tensor)), "bit-identical values"
    assert not arena.pinned


def test_to_device_is_one_buffer_whose_views_equal_the_masters():
    tensors = _tensors()
    arena = HostArena(tensors, pin=False)
    copies = arena.to_device("cpu")
    storages = {copy.untyped_storage().data_ptr() for copy in copies}
    assert len(storages) == 1 and storages != {arena.host.buffer.data_ptr()}, "one new buffer"
    for copy, tensor in zip(copies, tensors, strict=True):
        assert copy.shape == tensor.shape and torch.equal(_bytes(copy), _bytes(tensor))


def test_layout_and_rounding_arithmetic():
    assert aligned_layout([1, 512, 0, 3]) == ([0, 512, 1024, 1024], 1027)
    assert [power_of_two_pinned_bytes(size) for size in (0, 1, 512, 513, 52_428_800)] == [0, 1, 512, 1024,
                                                                                         1 << 26]
    assert tensor_bytes((5120, 13824), torch.bfloat16) == 141_557_760


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_pinning_without_cuda_is_one_line():
    with pytest.raises(InputError, match="pin_memory = True needs CUDA"):
        HostArena(_tensors(), pin=True)


def wan14b_block_pinned_bytes() -> tuple[int, int, int]:
    """(tensor bytes, pinned bytes one pin_memory() per tensor, arena bytes) of one Wan2.1 14B block in bf16."""
    with torch.device("meta"):
        block = AttentionBlock(5120, 13824, 40, qk_norm=True, cross_attn_norm=True, eps=1e-6)
    shapes = [tuple(tensor.shape) for tensor in [*block.parameters(), *block.buffers()]]
    sizes = [tensor_bytes(shape, torch.bfloat16) for shape in shapes]
    return sum(sizes), sum(power_of_two_pinned_bytes(size) for size in sizes), aligned_layout(sizes)[1]


def test_a_wan14b_block_pins_its_bytes_instead_of_one_and_a_half_times_them():
    data, per_tensor, arena = wan14b_block_pinned_bytes()
    # the review's numbers (gpu_review.md, section 2): 703 MB -> 1074 MB per block, 28.1 -> 43.0 GB for 40
    assert round(data / 1e6) == 703 and round(per_tensor / 1e6) == 1074
    assert round(40 * data / 1e9, 1) == 28.1 and round(40 * per_tensor / 1e9, 1) == 43.0
    assert data <= arena < data + 30 * ALIGNMENT, "the arena adds only alignment padding"
