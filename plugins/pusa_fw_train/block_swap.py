"""Block swap in training (``block_swap = N``): the frozen weights of the last N transformer blocks live in
host memory (pinned on CUDA) and are copied to the device only while a block computes.

Each swapped block keeps one host *master* of every frozen parameter and buffer, all of them aligned views
of ONE flat host buffer per block (`pusa_fw.host_memory.HostArena`: page-locked once with
``cudaHostRegister`` on CUDA, so no per-tensor power-of-two rounding of PyTorch's pinned allocator). When
the block is called (the forward, and the recomputation of gradient checkpointing in the backward),
`BlockSwap` copies that buffer to the device in ONE copy and puts views of the copy in the block's place.
The masters go back lazily: when the next swapped block is taken, when the model's forward ends without
gradients, or when the backward is done (an autograd engine callback), never when the block call returns.
That matters with ``token_chunks > 1``: each chunk of cross-attention / FFN is a checkpoint nested in the
block's own, and the backward recomputes those chunks after the block's recomputation has returned, reading
the weights from the module again; they must still be the device copies then. Block k's chunks are all
recomputed before block k - 1 is, so block k keeps its copies exactly as long as needed.
The copies are plain tensors, so whatever autograd saves for the backward keeps its own reference to
them and they are freed when the block's backward is done; no weight is ever written back (the base is
frozen). Trainable tensors (LoRA factors) are not swapped: they stay on the device with the optimizer.

Prefetch: while block k computes, the copy of the block needed next is already under way: block k + 1 in
the forward, block k - 1 in the backward's recomputation (the root module's forward pre- and post-hooks
set the direction). On CUDA the copy runs on a side stream from pinned memory and the compute stream waits
on an event before it uses the block; on the CPU it is the same copy made earlier, so the arithmetic is
bit-identical to no swap either way. At most two swapped blocks' weights are on the device at once.

Requirements, refused in one line by the config: gradient checkpointing (without it autograd keeps every
swapped block's device weights alive from its forward until its backward, so nothing would be saved), a
LoRA run (a full fine-tune trains every weight; those must stay on the device with their optimizer state),
and no FSDP2 (FSDP2 already shards the frozen weights over the ranks and moves them itself).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from pusa_fw.errors import InputError
from pusa_fw.host_memory import HostArena

__all__ = ["BlockSwap"]

_Slot = tuple[dict[str, Any], str]  # (a module's _parameters or _buffers, the entry's name)


class _SwappedBlock:
    """The frozen tensors of one block: where each sits in the module tree and its host master."""

    def __init__(self, block: nn.Module, prefix: str, pin_memory: bool) -> None:
        self.slots: list[_Slot] = []
        self.masters: list[torch.Tensor] = []
        self.names: list[str] = []
        for module_name, module in block.named_modules():
            for table in (module._parameters, module._buffers):
                for name, tensor in table.items():
                    if tensor is None or tensor.requires_grad:
                        continue
                    self.slots.append((table, name))
                    self.masters.append(tensor)
                    self.names.append(f"{prefix}{module_name}.{name}" if module_name else f"{prefix}{name}")
        self.arena = HostArena(self.masters, pin=pin_memory, adopt=True)

    def bytes(self) -> int:
        """Bytes of the block's host buffer (its swapped tensors plus alignment padding)."""
        return self.arena.nbytes


class BlockSwap:
    """Keep the frozen weights of a model's last `count` blocks on the host; stream them per block call.

    Attach it to the model before the model is moved to its device: ``model.to(device)`` then moves
    everything except the swapped tensors.

    Args:
        model: a module with a ``blocks`` `nn.ModuleList` (e.g. `WanDiT`), LoRA injected / trainable set.
        count: number of blocks swapped (the last ones), 1 .. len(blocks).
        device: the compute device.
        pin_memory: pin the host masters (default: on for CUDA, where it lets the copies overlap compute).
        prefetch: copy the next block while the current one runs.

    Attributes:
        copies: number of block copies made so far (each swapped block is copied once in a forward and
            once more in the recomputation of the backward).
        live_bytes: bytes of swapped-block copies alive now (on the device).
        peak_live_bytes: the most `live_bytes` has been (at most two blocks' worth).
        pinned_bytes: bytes of page-locked host memory held (0 unless pinned).

    Raises:
        InputError: no ``blocks`` ModuleList, or `count` outside 1 .. len(blocks).
    """

    def __init__(self, model: nn.Module, count: int, device: torch.device | str, *,
                 pin_memory: bool | None = None, prefetch: bool = True) -> None:
        blocks = getattr(model, "blocks", None)
        if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
            raise InputError(
                f"block_swap needs a model with a non-empty `blocks` ModuleList; {type(model).__name__} has "
                "none: set block_swap = 0"
            )
        if not 1 <= count <= len(blocks):
            raise InputError(
                f"block_swap = {count} but the model has {len(blocks)} blocks; use 1 .. {len(blocks)}"
            )
        self.device = torch.device(device)
        pin = self.device.type == "cuda" if pin_memory is None else pin_memory
        first = len(blocks) - count
        self.indices = list(range(first, len(blocks)))
        self.blocks = [_SwappedBlock(blocks[index], f"blocks.{index}.", pin) for index in self.indices]
        self.prefetch = prefetch
        self.copies = 0
        self.live_bytes = 0
        self.peak_live_bytes = 0
        self.pinned_bytes = sum(swapped.arena.nbytes for swapped in self.blocks if swapped.arena.pinned)
        self._direction = 1
        self._holding: int | None = None  # the block whose slots hold device copies now
        self._backward_task: int | None = None  # the backward that will put the masters back at its end
        self._pending: dict[int, tuple[list[torch.Tensor], Any]] = {}
        on_cuda = self.device.type == "cuda" and prefetch
        self._stream: Any = torch.cuda.Stream(self.device) if on_cuda else None
        managed = {id(tensor) for swapped in self.blocks for tensor in swapped.masters}
        self._handles = [
            model.register_forward_pre_hook(self._forward_begins),
            model.register_forward_hook(self._forward_ends),
        ]
        for position, index in enumerate(self.indices):
            _keep_on_host(blocks[index], managed)
            _stream_calls(blocks[index], self, position)
        from torch.nn.parallel import DistributedDataParallel

        # DDP broadcasts rank 0's tensors once; the swapped ones are the same frozen base on every rank and
        # live on the host, where NCCL cannot reach them.
        names = [name for swapped in self.blocks for name in swapped.names]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)

    def host_bytes(self) -> int:
        """Bytes of host memory holding the swapped tensors (their bytes plus < 512 B padding each)."""
        return sum(swapped.bytes() for swapped in self.blocks)

    def close(self) -> None:
        """Put every master back and unpin the host buffers (the swap keeps working, unpinned)."""
        self._put_back()
        self._pending.clear()
        for swapped in self.blocks:
            swapped.arena.close()
        self.pinned_bytes = 0

    # ------------------------------------------------------------------ hooks

    def _forward_begins(self, _module: nn.Module, _inputs: Any) -> None:
        self._put_back()
        self._direction = 1
        self._pending.clear()
        self._start_prefetch(0)

    def _forward_ends(self, _module: nn.Module, _inputs: Any, _output: Any) -> None:
        self._put_back()
        if torch.is_grad_enabled():  # a backward follows: its recomputation runs the blocks last to first
            self._direction = -1
            self._start_prefetch(len(self.blocks) - 1)

    # ------------------------------------------------------------------ copies

    def _copy(self, position: int) -> list[torch.Tensor]:
        """Views of one device copy of block `position`'s host buffer (counted in `live_bytes`)."""
        self.copies += 1
        arena = self.blocks[position].arena
        copies = arena.to_device(self.device)
        if not copies:
            return copies
        size = arena.nbytes
        self.live_bytes += size
        self.peak_live_bytes = max(self.peak_live_bytes, self.live_bytes)
        alive = [len(copies)]

        def one_view_gone() -> None:  # the device buffer is freed with its last view
            alive[0] -= 1
            if alive[0] == 0:
                self._release(size)

        for copy in copies:  # until autograd (or this object) lets go of them
            weakref.finalize(copy, one_view_gone)
        return copies

    def _release(self, size: int) -> None:
        self.live_bytes -= size

    def _start_prefetch(self, position: int) -> None:
        if not self.prefetch or not 0 <= position < len(self.blocks) or position in self._pending:
            return
        if self._stream is None:
            self._pending[position] = (self._copy(position), None)
            return
        self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._stream):
            copies = self._copy(position)
            event = torch.cuda.Event()
            event.record(self._stream)
        self._pending[position] = (copies, event)

    def _take(self, position: int) -> list[torch.Tensor]:
        """Device copies of block `position` for the compute stream (the prefetched ones, or made now)."""
        copies, event = self._pending.pop(position, (None, None))
        self._pending.clear()  # a prefetch for another block was not needed after all
        if copies is None:
            return self._copy(position)
        if event is not None:
            compute = torch.cuda.current_stream(self.device)
            compute.wait_event(event)
            if copies:  # one device buffer made on the copy stream, now used by the compute stream
                copies[0].record_stream(compute)
        return copies

    @contextlib.contextmanager
    def on_device(self, position: int) -> Iterator[None]:
        """Block `position`'s frozen tensors replaced by device copies from here until they are put back.

        They are put back lazily (see the module docstring): the nested token-chunk checkpoints of the
        block are recomputed in the backward after this body has returned and still read them.
        """
        copies = self._take(position)
        self._put_back()
        swapped = self.blocks[position]
        for (table, name), copy in zip(swapped.slots, copies, strict=True):
            table[name] = copy
        self._holding = position
        self._start_prefetch(position + self._direction)
        self._put_back_after_backward()
        yield

    def _put_back(self) -> None:
        """The held block's masters back in its slots (its device copies live on while autograd holds them)."""
        if self._holding is None:
            return
        swapped = self.blocks[self._holding]
        for (table, name), master in zip(swapped.slots, swapped.masters, strict=True):
            table[name] = master
        self._holding = None

    def _put_back_after_backward(self) -> None:
        """Inside a backward (the recomputation), have the engine put the masters back once it is done."""
        task = torch._C._current_graph_task_id()
        if task == -1 or task == self._backward_task:
            return
        self._backward_task = task
        torch.autograd.Variable._execution_engine.queue_callback(self._backward_done)

    def _backward_done(self) -> None:
        self._backward_task = None
        self._put_back()
        self._pending.clear()


def _keep_on_host(block: nn.Module, managed: set[int]) -> None:
    """Make ``.to()`` / ``.cuda()`` of the model leave the block's swapped masters where they are."""
    apply = block._apply

    def keep(fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> nn.Module:
        return apply(lambda tensor: tensor if id(tensor) in managed else fn(tensor), recurse)

    block._apply = keep  # type: ignore[method-assign]


def _stream_calls(block: nn.Module, swap: BlockSwap, position: int) -> None:
    """Route every call of the block (forward and checkpoint recomputation) through `BlockSwap.on_device`."""
    forward = block.forward

    def streamed(*args: Any, **kwargs: Any) -> Any:
        with swap.on_device(position):
            return forward(*args, **kwargs)

    block.forward = streamed  # type: ignore[method-assign]
