"""Activation offload in training (``activation_offload = true``): what autograd keeps for the backward
outside the checkpointed blocks (above all each block's input, the only activation a checkpointed block
keeps) lives in host memory between the forward and the backward.

With gradient checkpointing a block keeps just its inputs until the backward, where it is run again; for a
14B Wan at 480p x 81 that is one fp32 `[L, D]` residual per block (0.67 GB each, 27 GB for 40 blocks).
`ActivationOffload` wraps the model's forward in `torch.autograd.graph.saved_tensors_hooks`: PyTorch's
non-reentrant checkpoint saves a block's inputs through the hooks that are active when it is called
(inside the block its own hooks take over), so every block input, and what the non-block modules save
(e.g. the head's input), is *packed* by copying it to the host and *unpacked* by copying it back when the
backward reaches it (the block's recomputation). The device copy is freed as soon as the forward drops it.
The backbone needs nothing but checkpointed blocks; the trainer attaches this object to any model.

What is offloaded: tensors on the compute device of at least `min_bytes`, dense (contiguous), and not
parameters (weights stay where they are), with two exceptions that stay on the device because copying
them out buys nothing: a tensor saved more than once (the text embedding, the RoPE table and the time
projection given to every block: the model keeps them alive through the forward anyway, and a host copy
would be re-uploaded at every block's recomputation), and what is saved after the last block started (the
last block's input and the head's inputs, which the backward needs first). A record is copied out when
the block after the next one starts (so by then it is known whether it is shared); a model without a
``blocks`` ModuleList copies each record out when it is saved.

Host memory: with pinning (CUDA) the first forward copies into pageable memory (host-synchronous, once);
from then on every forward reuses ONE flat host buffer of the size the largest forward needed, page-locked
once with ``cudaHostRegister`` (`pusa_fw.host_memory.HostBuffer`, no power-of-two rounding; a 0.67 GB
block input would otherwise pin 1 GB, cached forever by PyTorch's host allocator). A forward that starts
while host copies of an earlier one are still alive, or that needs more, uses pageable memory for the rest.

Streams: on CUDA each copy to the host runs on a side stream from the compute stream's point and the device
memory is released to the allocator once that copy is done (``record_stream``); the host buffer is
rewritten only by a later forward, whose copies wait for the compute stream, which waited for (or made)
every copy back of the backward before; in the backward, unpacking a tensor starts the copy
of the tensor packed just before it (the previous block's input, which the backward needs next) on the
side stream, and the compute stream waits on an event before it uses a prefetched copy. On the CPU the
"host copy" is a plain copy and the same values come back, so gradients are bit-identical to no offload.

Requirements, refused in one line by the config: gradient checkpointing (without it autograd saves every
activation of every block through these hooks and the run would copy hundreds of GB per step) and no FSDP2
(its unsharded parameters must not be copied out).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pusa_fw.host_memory import ALIGNMENT, HostBuffer, tensor_bytes

__all__ = ["ActivationOffload", "DEFAULT_MIN_BYTES"]

DEFAULT_MIN_BYTES = 1 << 20
"""Smaller saved tensors stay on the device (time embeddings, norm statistics, LoRA bottlenecks)."""


class _Packed:
    """One offloaded tensor: its host copy, where it came from, and the copies in flight.

    Attributes:
        host: the host copy (None while the tensor stays on the device).
        kept: the device tensor itself, while it is not (or never) copied out.
        device: the device the tensor came from and goes back to.
        ready: CUDA event recorded after the copy to the host (None off CUDA).
        previous: the record packed just before this one (weak); the nearest one that is not shared is
            prefetched when this one is unpacked.
        prefetched: a device copy made ahead of its unpack and the event that marks it done.
        shared: saved more than once (e.g. the text given to every block); unpacked once per saver, so its
            unpacks say nothing about what the backward needs next and prefetch nothing.
    """

    __slots__ = ("__weakref__", "device", "host", "kept", "prefetched", "previous", "ready", "shared",
                 "unpacked")

    def __init__(self, kept: torch.Tensor, previous: weakref.ref[_Packed] | None) -> None:
        self.kept: torch.Tensor | None = kept
        self.host: torch.Tensor | None = None
        self.device = kept.device
        self.ready: Any = None
        self.previous = previous
        self.prefetched: tuple[torch.Tensor, Any] | None = None
        self.shared = False
        self.unpacked = False


class ActivationOffload:
    """Keep what autograd saves outside a model's checkpointed blocks in host memory until the backward.

    Attach it after the model is on its device (and after `pusa_fw_train.block_swap.BlockSwap`, if any);
    from then on every call of the model with gradients on offloads (see the module docstring).

    Args:
        model: the module whose calls are wrapped (e.g. `WanDiT` with gradient checkpointing on); None: wrap
            nothing, the caller enters `hooks` around its own forward.
        device: the compute device; tensors elsewhere are left alone.
        pin_memory: pin the host copies (default: on for CUDA, where it lets the copies overlap compute).
        prefetch: in the backward, copy the next tensor back while the current block is recomputed.
        min_bytes: smallest tensor offloaded (default `DEFAULT_MIN_BYTES`, read when the object is made).
        reuse_host_buffer: reuse one flat host buffer per forward (default: when pinning; on the CPU the
            copies back are then clones, as the buffer is rewritten by the next forward).

    Attributes:
        packed: tensors copied to the host so far (each once per forward).
        unpacked: copies brought back to the device so far.
        host_bytes: bytes of host copies alive now.
        host_buffer_bytes: size of the reused flat host buffer (0 before the second forward; pinned on CUDA).
        peak_host_bytes: the most `host_bytes` has been: the host memory the offload needs.
        offloaded_bytes: bytes copied to the host by the last forward.
        prefetch_hits: unpacks that found their copy already made ahead.
        peak_prefetched: the most device copies made ahead and not yet used at one time, per forward (1 in
            the backward of checkpointed blocks: the input of the block recomputed next).
    """

    def __init__(
        self,
        model: nn.Module | None,
        device: torch.device | str,
        *,
        pin_memory: bool | None = None,
        prefetch: bool = True,
        min_bytes: int | None = None,
        reuse_host_buffer: bool | None = None,
    ) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())  # tensors carry their index
        self.pin_memory = self.device.type == "cuda" if pin_memory is None else pin_memory
        self.prefetch = prefetch
        self.min_bytes = DEFAULT_MIN_BYTES if min_bytes is None else min_bytes
        self.packed = 0
        self.unpacked = 0
        self.host_bytes = 0
        self.peak_host_bytes = 0
        self.offloaded_bytes = 0
        self.peak_prefetched = 0
        self.prefetch_hits = 0
        self._prefetched = 0
        self._on_cuda = self.device.type == "cuda"
        self._stream: Any = torch.cuda.Stream(self.device) if self._on_cuda else None
        # Weak: the autograd graph owns the records; these only find them again within one forward.
        self._seen: dict[int, tuple[weakref.ref[torch.Tensor], int, weakref.ref[_Packed]]] = {}
        self._last: weakref.ref[_Packed] | None = None
        self._reuse = self.pin_memory if reuse_host_buffer is None else reuse_host_buffer
        self._buffer: HostBuffer | None = None
        self._buffer_end = 0  # bump pointer of this forward in `_buffer`; None: not usable this forward
        self._needed = 0  # host bytes this forward asked for (aligned): the buffer size for the next
        self._forward = False  # inside `hooks()`
        self._fresh: list[_Packed] = []  # packed since the last block started
        self._waiting: list[_Packed] = []  # packed before that: copied out when the next block starts
        self._model_forward: Callable[..., Any] | None = None
        self._model = model
        self._by_block = False
        if model is None:
            return
        blocks = getattr(model, "blocks", None)
        if isinstance(blocks, nn.ModuleList) and len(blocks) > 0:
            self._by_block = True
            for block in blocks:
                block.register_forward_pre_hook(self._block_starts)
        forward = model.forward

        @functools.wraps(forward)
        def offloaded(*args: Any, **kwargs: Any) -> Any:
            if not torch.is_grad_enabled():
                return forward(*args, **kwargs)
            with self.hooks():
                return forward(*args, **kwargs)

        self._model_forward = forward
        model.forward = offloaded  # type: ignore[method-assign]

    def detach(self) -> None:
        """Give the model its own forward back (no offload from the next call on)."""
        if self._model is not None and self._model_forward is not None:
            self._model.__dict__.pop("forward", None)
            self._model_forward = None

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        """The saved-tensor hooks of one forward (a context manager; `ActivationOffload` enters it itself)."""
        return _Hooks(self)

    @property
    def host_buffer_bytes(self) -> int:
        return 0 if self._buffer is None else self._buffer.nbytes

    def _begin(self) -> None:
        self.offloaded_bytes = 0
        self._prefetched = 0
        self._seen.clear()
        self._last = None
        self._fresh, self._waiting = [], []
        self._forward = True
        if self._reuse and self.host_bytes == 0:  # no host copy of an earlier forward is alive
            if self._needed > self.host_buffer_bytes:
                if self._buffer is not None:
                    self._buffer.close()
                self._buffer = HostBuffer(self._needed, pin=self.pin_memory)
            self._buffer_end = 0
        else:
            self._buffer_end = None
        self._needed = 0

    def _end(self) -> None:
        self._forward = False
        self._fresh, self._waiting = [], []  # saved after the last block started: they stay on the device

    def _block_starts(self, _module: nn.Module, _inputs: Any) -> None:
        if not self._forward:  # the recomputation in the backward
            return
        for record in self._waiting:
            if not record.shared:
                self._to_host(record)
        self._waiting, self._fresh = self._fresh, []

    # ------------------------------------------------------------------ pack

    def _wanted(self, tensor: torch.Tensor) -> bool:
        return (
            tensor.device == self.device
            and not isinstance(tensor, nn.Parameter)
            and tensor.is_contiguous()
            and tensor.numel() * tensor.element_size() >= self.min_bytes
        )

    def pack(self, tensor: torch.Tensor) -> Any:
        """Saved-tensor pack hook: a `_Packed` host copy, or the tensor itself when it stays."""
        if not self._wanted(tensor):
            return tensor
        known = self._seen.get(id(tensor))
        if known is not None and known[0]() is tensor and known[1] == tensor._version:
            record = known[2]()
            if record is not None:
                record.shared = True
                if record.kept is None:  # copied out already: keep the device tensor, drop the copy
                    record.kept, record.host, record.ready = tensor, None, None
                return record
        record = _Packed(tensor, self._last)
        self._last = weakref.ref(record)
        self._seen[id(tensor)] = (weakref.ref(tensor), tensor._version, weakref.ref(record))
        if self._by_block:
            self._fresh.append(record)
        else:
            self._to_host(record)
        return record

    def _host_for(self, tensor: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """A host tensor like `tensor`: in the reused buffer when it fits, else pageable (or pinned) memory."""
        start = -(-self._needed // ALIGNMENT) * ALIGNMENT
        self._needed = start + tensor_bytes(tensor.shape, tensor.dtype)
        if self._buffer is not None and self._buffer_end is not None and self._needed <= self._buffer.nbytes:
            self._buffer_end = self._needed
            return self._buffer.view(start, tensor.shape, tensor.dtype), self._buffer.pinned
        pin = self.pin_memory and not self._reuse  # reused buffer wanted: no rounded pinned block meanwhile
        return torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=pin), pin

    def _to_host(self, record: _Packed) -> None:
        tensor = record.kept
        assert tensor is not None
        size = tensor.numel() * tensor.element_size()
        host, pinned = self._host_for(tensor)
        if self._stream is not None:
            self._stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self._stream):
                host.copy_(tensor.detach(), non_blocking=pinned)
                record.ready = torch.cuda.Event()
                record.ready.record(self._stream)
            tensor.record_stream(self._stream)  # its memory is reused only after the copy is done
        else:
            host.copy_(tensor.detach())
        record.host, record.kept = host, None
        self.packed += 1
        self.offloaded_bytes += size
        self.host_bytes += size
        self.peak_host_bytes = max(self.peak_host_bytes, self.host_bytes)
        weakref.finalize(host, self._release, size)

    def _release(self, size: int) -> None:
        self.host_bytes -= size

    # ------------------------------------------------------------------ unpack

    def unpack(self, packed: Any) -> torch.Tensor:
        """Saved-tensor unpack hook: the device copy of a `_Packed` (prefetched, or made now)."""
        if not isinstance(packed, _Packed):
            return packed
        tensor = self._take(packed)
        if self.prefetch and not packed.shared:
            previous = _before(packed)
            if (previous is not None and previous.host is not None and previous.prefetched is None
                    and not previous.unpacked):
                previous.prefetched = self._to_device(previous, on_side_stream=True)
                self._prefetched += 1
                self.peak_prefetched = max(self.peak_prefetched, self._prefetched)
        return tensor

    def _take(self, packed: _Packed) -> torch.Tensor:
        packed.unpacked = True
        if packed.kept is not None:  # never copied out
            return packed.kept
        prefetched, packed.prefetched = packed.prefetched, None
        if prefetched is None:
            return self._to_device(packed, on_side_stream=False)[0]
        self._prefetched -= 1
        self.prefetch_hits += 1
        tensor, done = prefetched
        if done is not None:
            compute = torch.cuda.current_stream(self.device)
            compute.wait_event(done)
            tensor.record_stream(compute)  # memory made on the side stream, used by the compute stream
        return tensor

    def _to_device(self, packed: _Packed, *, on_side_stream: bool) -> tuple[torch.Tensor, Any]:
        self.unpacked += 1
        assert packed.host is not None
        if self._stream is None:
            if packed.device.type == "cpu" and not self._reuse:
                return packed.host, None  # the host copy itself: nothing else writes to it
            return packed.host.to(packed.device, copy=True), None  # (the reused buffer is rewritten later)
        compute = torch.cuda.current_stream(self.device)
        if not on_side_stream:
            compute.wait_event(packed.ready)
            return packed.host.to(packed.device, non_blocking=self.pin_memory), None
        self._stream.wait_stream(compute)
        with torch.cuda.stream(self._stream):
            tensor = packed.host.to(packed.device, non_blocking=self.pin_memory)
            done = torch.cuda.Event()
            done.record(self._stream)
        return tensor, done


def _before(packed: _Packed) -> _Packed | None:
    """The nearest record packed before `packed` that is not shared (None when there is none left)."""
    previous = packed.previous() if packed.previous is not None else None
    while previous is not None and previous.shared:
        previous = previous.previous() if previous.previous is not None else None
    return previous


class _Hooks(torch.autograd.graph.saved_tensors_hooks):
    def __init__(self, offload: ActivationOffload) -> None:
        super().__init__(offload.pack, offload.unpack)
        self.offload = offload

    def __enter__(self) -> None:
        self.offload._begin()
        super().__enter__()

    def __exit__(self, *args: object) -> None:
        super().__exit__(*args)
        self.offload._end()
