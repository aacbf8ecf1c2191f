"""CPU offload of model weights: per model while it is in use, or per DiT block while the block runs.

The mechanism is device-agnostic. Each offloaded module keeps one *master* copy of every parameter and
buffer on the CPU. Onloading points the tensor's ``.data`` at a fresh copy on the compute device (made
from the master, ``non_blocking`` from pinned memory on CUDA); offloading points it back at the master
and drops the copy. Inference never writes weights, so nothing is copied back. The `torch.nn.Parameter`
objects themselves never change, so tied weights, LoRA wrappers and optimiser-free hooks keep working.

Three placements share one interface, ``with placement.active(): ...``:

- `Resident`: the weights live on the device all the time (no offload);
- `ModelOffload`: the whole module is on the device only inside ``active()``;
- `BlockOffload`: inside ``active()`` the module's non-block weights are on the device, and each block of
  ``module.blocks`` is onloaded by a forward pre-hook and offloaded again by a forward hook; the next
  block is prefetched while the current one computes, so at most two blocks' weights (e.g. 2 x 0.7 GB of
  the 14B model in bf16, 2 x 0.35 GB in fp8) are on the device at any time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from pusa_fw.errors import InputError

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
    """

    def __init__(
        self, tensors: list[torch.Tensor], device: torch.device, pin_memory: bool | None = None
    ) -> None:
        self.device = torch.device(device)
        pin = self.device.type == "cuda" if pin_memory is None else pin_memory
        self.tensors = list(tensors)
        self.masters: list[torch.Tensor] = []
        for tensor in self.tensors:
            master = tensor.data.to("cpu")
            if pin and not master.is_pinned():
                master = master.pin_memory()
            tensor.data = master
            self.masters.append(master)
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
        for tensor, master in zip(self.tensors, self.masters):
            tensor.data = master.to(self.device, copy=True, non_blocking=master.is_pinned())
        self.on_device = True
        self.onload_count += 1

    def offload(self) -> None:
        """Point every managed tensor back at its CPU master (the device copies are freed)."""
        for tensor, master in zip(self.tensors, self.masters):
            tensor.data = master
        self.on_device = False


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
    the same copy made earlier, so the result is bit-identical either way. At most two blocks (the running
    one and the next) are on the device at once; without `prefetch`, one.

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
        elif event is not None:
            compute_stream = torch.cuda.current_stream(residency.device)
            compute_stream.wait_event(event)
            for tensor in residency.tensors:  # memory made on the copy stream, now read by this one
                tensor.data.record_stream(compute_stream)

    def _start_prefetch(self, index: int) -> None:
        residency = self.blocks[index]
        if residency.on_device:
            return
        if self._copy_stream is None:
            residency.onload()
            return
        self._copy_stream.wait_stream(torch.cuda.current_stream(residency.device))
        with torch.cuda.stream(self._copy_stream):
            residency.onload()
            event = torch.cuda.Event()
            event.record(self._copy_stream)
        self._pending[index] = event

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
            self._pending.clear()
            for residency in self.blocks:
                residency.offload()
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
