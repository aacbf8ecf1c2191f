"""Save on SIGTERM: a cluster's pre-emption notice stops the run at the next step boundary with a checkpoint.

`StopRequest` installs a SIGTERM handler for the duration of `Trainer.run` (main thread only; the previous
handler comes back after) that only sets a flag. The trainer asks `requested()` after each optimizer step;
under several processes the flag is all-reduced (max) so every rank stops after the same step, saves the
same checkpoint and leaves the loop together, whichever rank the signal reached first.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import torch

from .parallel import ParallelContext

__all__ = ["StopRequest"]


class StopRequest:
    """A SIGTERM flag shared by every rank (see the module docstring).

    Args:
        context: the run's `ParallelContext` (for the all-reduce).
        enabled: install the handler (``checkpoint.save_on_sigterm``).
    """

    def __init__(self, context: ParallelContext, enabled: bool) -> None:
        self._context = context
        self._enabled = enabled and threading.current_thread() is threading.main_thread()
        self._flag = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._flag = True

    def __enter__(self) -> StopRequest:
        if self._enabled:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._enabled:
            signal.signal(signal.SIGTERM, self._previous)

    def requested(self) -> bool:
        """True once SIGTERM arrived on any rank (every rank must call it: a collective when distributed)."""
        if not self._enabled:
            return False
        if not self._context.is_distributed:
            return self._flag
        import torch.distributed as dist

        flag = torch.tensor([1.0 if self._flag else 0.0], device=self._context.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)
