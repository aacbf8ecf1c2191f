"""Save on a stop signal: a scheduler's pre-emption notice stops the run at a micro-step boundary with a
checkpoint of the last finished optimizer step.

`StopRequest` installs a handler for the configured signal (``checkpoint.stop_signal``: SIGTERM, SIGUSR1
or SIGUSR2) for the duration of `Trainer.run` (main thread only; the previous handler comes back after).
The handler only sets a flag. The training loop calls `StopRequest.poll` before every micro-step, on every
rank, in the same order; when it returns True every rank drops the unfinished step and saves the same
checkpoint, whichever rank the signal reached first.

How the ranks agree without a device sync: every poll launches an asynchronous MAX all-reduce of this
rank's flag on the gloo host group (`ParallelContext.host_group`, a one-element CPU tensor: it never waits
for the device stream) and reads the all-reduce launched by the previous poll, which had a whole
micro-step to finish. The price is one micro-step of latency: a signal that arrives during micro-step m is
acted on at the boundary before micro-step m + 2. A single process reads its own flag at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import torch

from .parallel import ParallelContext

__all__ = ["SIGNALS", "StopRequest"]

SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGUSR1": signal.SIGUSR1, "SIGUSR2": signal.SIGUSR2}
"""The signals ``checkpoint.stop_signal`` may name ("none": no handler)."""


class StopRequest:
    """A stop flag shared by every rank (see the module docstring).

    Args:
        context: the run's `ParallelContext` (its host group carries the all-reduce).
        signal_name: ``checkpoint.stop_signal``: a key of `SIGNALS`, or "none".
    """

    def __init__(self, context: ParallelContext, signal_name: str) -> None:
        self._context = context
        self._signal = SIGNALS.get(signal_name)
        self._enabled = self._signal is not None and threading.current_thread() is threading.main_thread()
        self._flag = False
        self._previous: Any = None
        self._pending: tuple[Any, torch.Tensor] | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._flag = True

    def __enter__(self) -> StopRequest:
        if self._enabled:
            self._previous = signal.signal(self._signal, self._handle)
        return self

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        if self._pending is not None and exc_type is None:
            self._pending[0].wait()  # every rank launched it; leave no collective in flight
        self._pending = None
        if self._enabled:
            signal.signal(self._signal, self._previous)

    def poll(self) -> bool:
        """True once the signal reached any rank (every rank calls it at every micro-step boundary).

        Distributed: the answer of the all-reduce launched by the previous call (False at the first
        call), so every rank gets the same answer at the same call.
        """
        if not self._enabled:
            return False
        if not self._context.is_distributed:
            return self._flag
        import torch.distributed as dist

        agreed = False
        if self._pending is not None:
            work, flag = self._pending
            work.wait()  # launched one micro-step ago: done by now, a host-side wait only
            agreed = bool(flag.item() > 0)  # a CPU tensor: no device sync
            self._pending = None
        if not agreed:
            flag = torch.tensor([1 if self._flag else 0], dtype=torch.int32)
            work = dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._context.host_group, async_op=True)
            self._pending = (work, flag)
        return agreed
