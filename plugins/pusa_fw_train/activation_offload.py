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
parameters (weights stay where they are). A tensor saved several times (the text embedding and the RoPE
table given to every block) is copied to the host once per forward and shared.

Streams: on CUDA each copy to the host runs on a side stream from the compute stream's point (the host
buffer is pinned, from PyTorch's caching host allocator) and the device memory is released to the
allocator once that copy is done (``record_stream``); in the backward, unpacking a tensor starts the copy
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

__all__ = ["ActivationOffload", "DEFAULT_MIN_BYTES"]

DEFAULT_MIN_BYTES = 1 << 20
"""Smaller saved tensors stay on the device (time embeddings, norm statistics, LoRA bottlenecks)."""


class _Packed:
    """One offloaded tensor: its host copy, where it came from, and the copies in flight.

    Attributes:
        host: the host copy (pinned on CUDA).
        device: the device the tensor came from and goes back to.
        ready: CUDA event recorded after the copy to the host (None off CUDA).
        previous: the record packed just before this one (weak); the nearest one that is not shared is
            prefetched when this one is unpacked.
        prefetched: a device copy made ahead of its unpack and the event that marks it done.
        shared: saved more than once (e.g. the text given to every block); unpacked once per saver, so its
            unpacks say nothing about what the backward needs next and prefetch nothing.
    """

    __slots__ = ("__weakref__", "device", "host", "prefetched", "previous", "ready", "shared", "unpacked")

    def __init__(
        self, host: torch.Tensor, device: torch.device, ready: Any, previous: weakref.ref[_Packed] | None
    ) -> None:
        self.host = host
        self.device = device
        self.ready = ready
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

    Attributes:
        packed: tensors copied to the host so far (each once per forward).
        unpacked: copies brought back to the device so far.
        host_bytes: bytes of host copies alive now.
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
        self._model_forward: Callable[..., Any] | None = None
        self._model = model
        if model is None:
            return
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
        self.offloaded_bytes = 0
        self._prefetched = 0
        self._seen.clear()
        self._last = None
        return _Hooks(self)

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
                return record
        record = self._to_host(tensor)
        self._seen[id(tensor)] = (weakref.ref(tensor), tensor._version, weakref.ref(record))
        return record

    def _to_host(self, tensor: torch.Tensor) -> _Packed:
        size = tensor.numel() * tensor.element_size()
        ready = None
        if self._stream is not None:
            self._stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self._stream):
                host = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=self.pin_memory)
                host.copy_(tensor.detach(), non_blocking=self.pin_memory)
                ready = torch.cuda.Event()
                ready.record(self._stream)
            tensor.record_stream(self._stream)  # its memory is reused only after the copy is done
        else:
            host = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=self.pin_memory)
            host.copy_(tensor.detach())
        self.packed += 1
        self.offloaded_bytes += size
        self.host_bytes += size
        self.peak_host_bytes = max(self.peak_host_bytes, self.host_bytes)
        weakref.finalize(host, self._release, size)
        record = _Packed(host, tensor.device, ready, self._last)
        self._last = weakref.ref(record)
        return record

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
            if previous is not None and previous.prefetched is None and not previous.unpacked:
                previous.prefetched = self._to_device(previous, on_side_stream=True)
                self._prefetched += 1
                self.peak_prefetched = max(self.peak_prefetched, self._prefetched)
        return tensor

    def _take(self, packed: _Packed) -> torch.Tensor:
        packed.unpacked = True
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
        if self._stream is None:
            if packed.device.type == "cpu":
                return packed.host, None  # the host copy itself: nothing else writes to it
            return packed.host.to(packed.device, copy=True), None
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
