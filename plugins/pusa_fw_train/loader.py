"""`BatchLoader`: the run's micro-batches in data order, loaded ahead by a background thread.

The thread walks its own copy of the data-order position, splits each global batch for this rank and loads
the rank's samples (`TrainingSource.load`) up to ``prefetch`` micro-batches ahead, while the model trains on
the current one. It produces exactly the batches, in exactly the order, of loading them in the training
loop, so a resumed run (which starts a loader at the saved position) stays bit-exact. ``prefetch = 0``
loads synchronously in the caller's thread. An error in the thread is raised by the next `next` call.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pusa_fw.training_data import TrainingSample

from .order import DataOrder, OrderPosition

__all__ = ["BatchLoader", "LoadedBatch"]

Split = Callable[[Sequence[int]], tuple[list[int], Any]]


@dataclass
class LoadedBatch:
    """One micro-batch: this rank's `indices` and `samples`, its loss function, and the position after it."""

    indices: list[int]
    loss_fn: Any
    samples: list[TrainingSample]
    position: OrderPosition


class BatchLoader:
    """Micro-batches from `order` starting at `position` (see the module docstring).

    Args:
        order: the run's data order.
        position: where to start (copied; the loader never changes it).
        split: ``split(global_indices) -> (rank_indices, loss_fn)`` (`ParallelContext.split`).
        load: ``load(index) -> TrainingSample`` (the source's `load`).
        prefetch: micro-batches loaded ahead by a thread; 0 loads in the caller's thread.
    """

    def __init__(
        self,
        order: DataOrder,
        position: OrderPosition,
        split: Split,
        load: Callable[[int], TrainingSample],
        prefetch: int,
    ) -> None:
        self._order, self._split, self._load = order, split, load
        self._position = replace(position)
        self._prefetch = prefetch
        self._stop = threading.Event()
        self._queue: queue.Queue[LoadedBatch | BaseException] = queue.Queue(maxsize=max(prefetch, 1))
        self._thread: threading.Thread | None = None
        if prefetch > 0:
            self._thread = threading.Thread(target=self._fill, name="pusa-fw-batch-loader", daemon=True)
            self._thread.start()

    def _produce(self) -> LoadedBatch:
        global_indices = self._order.next_batch(self._position)
        indices, loss_fn = self._split(global_indices)
        samples = [self._load(index) for index in indices]
        return LoadedBatch(indices, loss_fn, samples, replace(self._position))

    def _fill(self) -> None:
        while not self._stop.is_set():
            try:
                item: LoadedBatch | BaseException = self._produce()
            except BaseException as error:  # handed to the training thread, which raises it
                item = error
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return

    def next(self) -> LoadedBatch:
        """The next micro-batch in data order."""
        if self._thread is None:
            return self._produce()
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop the thread (batches loaded ahead are dropped; a new loader starts from a saved position)."""
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    self._thread.join(timeout=0.1)
            self._thread = None
