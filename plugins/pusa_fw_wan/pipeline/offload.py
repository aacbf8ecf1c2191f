"""CPU offload of model weights: per model while it is in use, or per DiT block while the block runs.

The mechanism is device-agnostic. Each offloaded module keeps one *master* copy of every parameter and
buffer on the CPU, all of them aligned views of ONE flat host buffer per residency
(`pusa_fw.host_memory.HostArena`: page-locked once with ``cudaHostRegister`` on CUDA, so no per-tensor
power-of-two rounding: a 14B block in bf16 pins 703 MB, not 1074 MB). Onloading copies that buffer to the
compute device in ONE copy (``non_blocking`` when pinned) and points each tensor's ``.data`` at its view of
the copy; offloading points it back at the master and drops the copy. Inference never writes weights, so nothing is copied back. The `torch.nn.Parameter`
objects themselves never change, so tied weights, LoRA wrappers and optimiser-free hooks keep working.

Three placements share one interface, ``with placement.active(): ...``:

- `Resident`: the weights live on the device all the time (no offload);
- `ModelOffload`: the whole module is on the device only inside ``active()``;
- `BlockOffload`: inside ``active()`` the module's non-block weights are on the device, and each block of
  ``module.blocks`` is onloaded by a forward pre-hook and offloaded again by a forward hook; the next
  block is prefetched while the current one computes. The host is kept at most one block ahead of the
  device (after block i is launched it waits for block i - 1 to finish: a CUDA event), so at most three
  blocks' weights (the finishing one, the running one and the next being copied; e.g. 3 x 0.7 GB of the 14B
  model in bf16) are ever held on the device, two on the CPU; without the wait the Python loop runs ahead
  of the GPU by many blocks and the caching allocator holds all their copies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from pusa_fw.errors import InputError
from pusa_fw.host_memory import HostArena

__all__ = ["BlockOffload", "ModelOffload", "Placement", "Resident", "WeightResidency", "make_placement"]

OFFLOAD_MODES = ("none", "model", "block")


def _unique_tensors(modules: list[nn.Module]) -> list[torch.Tensor]:
    """Parameters and buffers of `modules`, each once (tied weights appear once)."""
    seen: set[int] = set()
    tensors: list[torch.Tensor] = []
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            if id(tensor) not in seen:
                seen.add(id(tensor))
                tensors.append(tensor)
    return tensors


class WeightResidency:
    """Moves a set of weight tensors between CPU master copies and the compute device.

    Args:
        tensors: the parameters and buffers managed (their current values become the masters; they are
            moved to the CPU first if they are elsewhere). See `of_modules`.
        device: the compute device.
        pin_memory: pin the masters so host-to-device copies can overlap (default: on for CUDA).

    Attributes:
        arena: the flat host buffer of the masters (`arena.nbytes` host bytes, pinned when `arena.pinned`).
    """

    def __init__(
        self, tensors: list[torch.Tensor], device: torch.device, pin_memory: bool | None = None
    ) -> None:
        self.device = torch.device(device)
        pin = self.device.type == "cuda" if pin_memory is None else pin_memory
        self.tensors = list(tensors)
        self.arena = HostArena(self.tensors, pin=pin, adopt=True)
        self.masters: list[torch.Tensor] = self.arena.views
        self.on_device = False
        self.onload_count = 0

    @classmethod
    def of_modules(
        cls, modules: list[nn.Module], device: torch.device, pin_memory: bool | None = None
    ) -> WeightResidency:
        """Manage every parameter and buffer of `modules` (tied tensors once)."""
        return cls(_unique_tensors(modules), device, pin_memory)

    def master_of(self, tensor: torch.Tensor) -> torch.Tensor:
        """The CPU master of a managed tensor."""
        for candidate, master in zip(self.tensors, self.masters):
            if candidate is tensor:
                return master
        raise InputError("tensor is not managed by this WeightResidency")

    def onload(self) -> None:
        """Point every managed tensor at a fresh copy on the device (no-op when already there)."""
        if self.on_device:
            return
        for tensor, copy in zip(self.tensors, self.arena.to_device(self.device), strict=True):
            tensor.data = copy
        self.on_device = True
        self.onload_count += 1

    def offload(self) -> None:
        """Point every managed tensor back at its CPU master (the device copies are freed)."""
        for tensor, master in zip(self.tensors, self.masters):
            tensor.data = master
        self.on_device = False

    def record_stream(self, stream: Any) -> None:
        """Mark the device copy (one buffer) as used by `stream` (it was made on another stream)."""
        if self.on_device and self.tensors:
            self.tensors[0].data.record_stream(stream)


class Placement:
    """Where a module's weights are while it computes; use ``with placement.active(): ...``."""

    module: nn.Module

    @contextlib.contextmanager
    def active(self) -> Iterator[nn.Module]:
        """Make the module usable on the compute device for the duration of the block."""
        yield self.module


class Resident(Placement):
    """No offload: the module is moved to the device once and stays there."""

    def __init__(self, module: nn.Module, device: torch.device) -> None:
        self.module = module.to(device)


class ModelOffload(Placement):
    """The whole module is on the device only inside ``active()`` (CPU masters otherwise)."""

    def __init__(self, module: nn.Module, device: torch.device, pin_memory: bool | None = None) -> None:
        self.module = module
        self.residency = WeightResidency.of_modules([module], device, pin_memory)

    @contextlib.contextmanager
    def active(self) -> Iterator[nn.Module]:
        self.residency.onload()
        try:
            yield self.module
        finally:
            self.residency.offload()


class BlockOffload(Placement):
    """Non-block weights on the device inside ``active()``; each block only around its forward.

    With `prefetch` (the default) the next block is copied while the current one computes: block i's
    pre-hook makes block i ready and then starts the copy of block i + 1 (of block 0 after the last, for the
    next forward). On CUDA the copy runs on a side stream from pinned memory and the compute stream waits
    on an event before it uses the block, so the copy overlaps the previous block's compute; on the CPU it is
    the same copy made earlier, so the result is bit-identical either way. Block i's post-hook records an
    event after the block's kernels and waits (on the host) for block i - 1's: the host stays one block
    ahead, and a block's device memory is counted until that wait says the device is done with it
    (`blocks_in_use`): at most 3 with `prefetch` on CUDA (finishing, running, next), 2 on the CPU.

    Attributes:
        blocks_in_use: blocks whose device copies the device may still read now.
        peak_blocks_in_use: the most `blocks_in_use` has been.
        host_bytes, pinned_bytes: host memory of the masters, and how much of it is page-locked.

    Args:
        module: a module with a ``blocks`` `nn.ModuleList` (e.g. `WanDiT`).
        device: the compute device.
        pin_memory: pin the CPU masters (default: on for CUDA).
        prefetch: copy the next block while the current one runs.
    """

    def __init__(self, module: nn.Module, device: torch.device, pin_memory: bool | None = None,
                 prefetch: bool = True) -> None:
        blocks = getattr(module, "blocks", None)
        if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
            raise InputError(
                f"block offload needs a model with a non-empty `blocks` ModuleList; "
                f"{type(module).__name__} has none: use offload 'model' instead"
            )
        self.module = module
        self.prefetch = prefetch
        self.blocks = [WeightResidency.of_modules([block], device, pin_memory) for block in blocks]
        in_blocks = {id(tensor) for residency in self.blocks for tensor in residency.tensors}
        rest = [tensor for tensor in _unique_tensors([module]) if id(tensor) not in in_blocks]
        self.rest = WeightResidency(rest, device, pin_memory)
        device = torch.device(device)
        self._copy_stream: Any = torch.cuda.Stream(device) if device.type == "cuda" and prefetch else None
        self._pending: dict[int, Any] = {}  # block index -> CUDA event of its prefetch copy
        self._finishing: dict[int, Any] = {}  # offloaded block -> event after its kernels (device not done)
        self._in_use: set[int] = set()
        self.peak_blocks_in_use = 0
        self._device = device
        self._enabled = False
        self._handles: list[Any] = []
        for index, block in enumerate(blocks):
            self._handles.append(block.register_forward_pre_hook(self._make_pre_hook(index)))
            self._handles.append(block.register_forward_hook(self._make_post_hook(index)))

    def _ready(self, index: int) -> None:
        """Make block `index` usable by the compute stream (load it now, or wait for its prefetch)."""
        residency = self.blocks[index]
        event = self._pending.pop(index, None)
        if not residency.on_device:
            residency.onload()
            self._count_in_use(index)
        elif event is not None:
            compute_stream = torch.cuda.current_stream(residency.device)
            compute_stream.wait_event(event)
            residency.record_stream(compute_stream)  # memory made on the copy stream, now read by this one

    def _start_prefetch(self, index: int) -> None:
        residency = self.blocks[index]
        if residency.on_device:
            return
        if self._copy_stream is None:
            residency.onload()
            self._count_in_use(index)
            return
        self._copy_stream.wait_stream(torch.cuda.current_stream(residency.device))
        with torch.cuda.stream(self._copy_stream):
            residency.onload()
            event = torch.cuda.Event()
            event.record(self._copy_stream)
        self._pending[index] = event
        self._count_in_use(index)

    def _count_in_use(self, index: int) -> None:
        self._in_use.add(index)
        self.peak_blocks_in_use = max(self.peak_blocks_in_use, len(self._in_use))

    @property
    def blocks_in_use(self) -> int:
        return len(self._in_use)

    @property
    def host_bytes(self) -> int:
        """Host bytes of every master (blocks and the rest): their bytes plus alignment padding."""
        return sum(residency.arena.nbytes for residency in [self.rest, *self.blocks])

    @property
    def pinned_bytes(self) -> int:
        """Page-locked host bytes (equal to `host_bytes` when pinned, no power-of-two rounding)."""
        return sum(residency.arena.nbytes for residency in [self.rest, *self.blocks] if residency.arena.pinned)

    def _completion_event(self) -> Any:
        """An event after the kernels queued so far on the compute stream (None off CUDA: done already)."""
        if self._device.type != "cuda":
            return None
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self._device))
        return event

    def _finished(self, index: int) -> None:
        """Block `index` was offloaded: wait (host) for every earlier block the device may still be on."""
        event = self._completion_event()
        if event is None:
            self._in_use.discard(index)
        else:
            self._finishing[index] = event
        for earlier in [other for other in self._finishing if other != index]:
            self._finishing.pop(earlier).synchronize()
            self._in_use.discard(earlier)

    def _make_pre_hook(self, index: int) -> Any:
        def onload(_module: nn.Module, _inputs: Any) -> None:
            if self._enabled:
                self._ready(index)
                if self.prefetch and len(self.blocks) > 1:
                    self._start_prefetch((index + 1) % len(self.blocks))

        return onload

    def _make_post_hook(self, index: int) -> Any:
        def offload(_module: nn.Module, _inputs: Any, _output: Any) -> None:
            if self._enabled:
                self.blocks[index].offload()
                self._finished(index)

        return offload

    @contextlib.contextmanager
    def active(self) -> Iterator[nn.Module]:
        self.rest.onload()
        self._enabled = True
        try:
            yield self.module
        finally:
            self._enabled = False
            if self._copy_stream is not None:
                self._copy_stream.synchronize()
            for event in self._finishing.values():
                event.synchronize()
            self._finishing.clear()
            self._pending.clear()
            for residency in self.blocks:
                residency.offload()
            self._in_use.clear()
            self.rest.offload()

    def remove(self) -> None:
        """Remove the hooks and leave every weight on the device (undo the block offload)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for residency in [self.rest, *self.blocks]:
            residency.onload()


def make_placement(module: nn.Module, device: torch.device, mode: str, *, blocks: bool = False) -> Placement:
    """The placement for an offload mode.

    Args:
        module: the model.
        device: the compute device.
        mode: ``"none"``, ``"model"`` or ``"block"``.
        blocks: whether ``"block"`` means block offload for this module (the DiT); other models get model
            offload under ``"block"``.
    """
    if mode not in OFFLOAD_MODES:
        raise InputError(f"offload={mode!r} is unknown; use one of {', '.join(OFFLOAD_MODES)}")
    if mode == "none":
        return Resident(module, device)
    if mode == "block" and blocks:
        return BlockOffload(module, device)
    return ModelOffload(module, device)
