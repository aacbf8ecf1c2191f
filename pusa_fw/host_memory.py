"""Flat host buffers for weights and activations kept off the device, page-locked once, without rounding.

`torch.Tensor.pin_memory()` (and ``torch.empty(..., pin_memory=True)``) go through PyTorch's caching host
allocator, which rounds every request up to a power of two (``c10::llvm::PowerOf2Ceil`` in
``ATen/core/CachingHostAllocator.h``) and keeps the rounded block cached for the life of the process: a
141.6 MB FFN weight pins 256 MB. Here one plain CPU buffer is allocated per set of tensors and, on CUDA,
page-locked in place with ``cudaHostRegister`` (exactly its own pages, unregistered by `HostBuffer.close`);
the tensors are views into it at aligned offsets, so a set of tensors costs its bytes plus under
`ALIGNMENT` bytes of padding per tensor, and it moves to the device in ONE copy into ONE allocation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pusa_fw.errors import InputError

__all__ = ["ALIGNMENT", "HostArena", "HostBuffer", "aligned_layout", "power_of_two_pinned_bytes", "tensor_bytes"]

ALIGNMENT = 512
"""Offset alignment of each tensor in a buffer (bytes): enough for every dtype and for fast copies."""


def tensor_bytes(shape: Sequence[int], dtype: torch.dtype) -> int:
    """Bytes of a dense tensor of `shape` and `dtype`."""
    count = 1
    for size in shape:
        count *= int(size)
    return count * torch.empty((), dtype=dtype, device="meta").element_size()


def aligned_layout(sizes: Sequence[int], alignment: int = ALIGNMENT) -> tuple[list[int], int]:
    """Offsets of consecutive byte ranges of `sizes`, each starting at a multiple of `alignment`.

    Returns:
        (offsets, total): ``offsets[i]`` is where range i starts; `total` is where the last one ends.
    """
    offsets, end = [], 0
    for size in sizes:
        start = -(-end // alignment) * alignment
        offsets.append(start)
        end = start + int(size)
    return offsets, end


def power_of_two_pinned_bytes(size: int) -> int:
    """Bytes PyTorch's caching host allocator pins for a `size`-byte ``pin_memory()`` request (its default)."""
    return 0 if size <= 0 else 1 << (int(size) - 1).bit_length()


class HostBuffer:
    """One flat uint8 CPU buffer, page-locked once with ``cudaHostRegister`` when `pin` is set.

    Args:
        nbytes: size of the buffer.
        pin: page-lock it (needs CUDA; registers exactly `nbytes`, no rounding).

    Attributes:
        buffer: `[nbytes]` uint8 CPU tensor.
        pinned: whether the buffer is registered with CUDA (host-to-device copies from it are asynchronous).

    Raises:
        InputError: `pin` without CUDA.
    """

    def __init__(self, nbytes: int, *, pin: bool) -> None:
        self.buffer = torch.empty(int(nbytes), dtype=torch.uint8)
        self.pinned = False
        if pin:
            self.pin()

    def pin(self) -> None:
        """Page-lock the buffer in place (its values stay); a no-op when already pinned or empty.

        Raises:
            InputError: no CUDA.
        """
        if self.pinned or self.nbytes == 0:
            return
        if not torch.cuda.is_available():
            raise InputError("pin_memory = True needs CUDA (no CUDA device here); use pin_memory = False")
        status = torch.cuda.cudart().cudaHostRegister(self.buffer.data_ptr(), self.nbytes, 0)
        if int(status) != 0:
            raise RuntimeError(f"cudaHostRegister of {self.nbytes} bytes failed with CUDA error {int(status)}")
        self.pinned = True

    @property
    def nbytes(self) -> int:
        """Size of the buffer in bytes (what it holds on the host, pinned or not)."""
        return self.buffer.numel()

    def view(self, offset: int, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        """The dense tensor of `shape` and `dtype` stored at byte `offset` (a view: writes go to the buffer)."""
        size = tensor_bytes(shape, dtype)
        return _typed_view(self.buffer[offset:offset + size], shape, dtype)

    def close(self) -> None:
        """Unregister the pages (after every copy from them is done; the memory stays valid, pageable)."""
        if self.pinned:
            torch.cuda.synchronize()
            torch.cuda.cudart().cudaHostUnregister(self.buffer.data_ptr())
            self.pinned = False

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: CUDA may already be gone
            pass


class HostArena:
    """Host copies of a fixed set of tensors, as aligned views of one `HostBuffer`.

    Args:
        tensors: the tensors copied in (any device; their values, dtypes and shapes).
        pin: page-lock the buffer (on CUDA, so that `to_device` is asynchronous).
        alignment: offset alignment of each tensor (bytes).
        adopt: point each tensor's ``.data`` at its view as soon as it is copied (the tensors become the
            masters; their old storage is freed then unless something else holds it).

    Attributes:
        views: the host copies, in the order of `tensors` (dense views of the buffer).
        offsets: byte offset of each view in the buffer.
        nbytes: the buffer's size: sum of the tensors' bytes plus < `alignment` bytes padding per tensor.
        data_bytes: sum of the tensors' bytes.
    """

    def __init__(self, tensors: Sequence[torch.Tensor], *, pin: bool, alignment: int = ALIGNMENT,
                 adopt: bool = False) -> None:
        self._specs = [(tuple(tensor.shape), tensor.dtype) for tensor in tensors]
        sizes = [tensor_bytes(shape, dtype) for shape, dtype in self._specs]
        self.offsets, total = aligned_layout(sizes, alignment)
        self.data_bytes = sum(sizes)
        self.host = HostBuffer(total, pin=False)
        self.views = [self.host.view(offset, shape, dtype)
                      for offset, (shape, dtype) in zip(self.offsets, self._specs, strict=True)]
        with torch.no_grad():
            for view, tensor in zip(self.views, tensors, strict=True):
                view.copy_(tensor.detach())
                if adopt:  # the old storage can go now: the host peak stays one tensor above the arena
                    tensor.data = view
        if pin:  # after the writes: the values are in place, the pages get locked once
            self.host.pin()

    @property
    def nbytes(self) -> int:
        return self.host.nbytes

    @property
    def pinned(self) -> bool:
        return self.host.pinned

    def to_device(self, device: torch.device | str) -> list[torch.Tensor]:
        """Copies of every view on `device`: one copy of the whole buffer, the tensors views into it.

        Asynchronous (``non_blocking``) when the buffer is pinned: use on the stream that will wait for it.
        """
        flat = self.host.buffer.to(device, copy=True, non_blocking=self.host.pinned)
        return [_typed_view(flat[offset:offset + tensor_bytes(shape, dtype)], shape, dtype)
                for offset, (shape, dtype) in zip(self.offsets, self._specs, strict=True)]

    def close(self) -> None:
        """Unpin the buffer (the views stay valid as pageable memory)."""
        self.host.close()


def _typed_view(raw: torch.Tensor, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """`raw` (uint8, dense, aligned) seen as a dense tensor of `shape` and `dtype`."""
    return raw.view(dtype).view(tuple(shape))
