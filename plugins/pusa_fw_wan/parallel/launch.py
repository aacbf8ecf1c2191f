"""Start a small `torchrun` job from Python (tests and benchmarks): same interpreter, local rendezvous.

The job runs ``python -m torch.distributed.run --standalone --nproc_per_node N <command>`` with one
thread per process and a hard wall-clock limit, so a collective that never completes fails the caller
instead of hanging it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["TorchrunResult", "run_torchrun"]


@dataclass(frozen=True)
class TorchrunResult:
    """Exit status and captured output of a `run_torchrun` job."""

    returncode: int
    stdout: str
    stderr: str


def run_torchrun(
    arguments: Sequence[str],
    *,
    nproc: int,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    monitor_interval: float | None = None,
) -> TorchrunResult:
    """Run ``torchrun --standalone --nproc_per_node nproc *arguments`` and wait at most ``timeout`` s.

    Args:
        arguments: what follows the torchrun options, e.g. ``["-m", "pusa_fw", "generate", ...]`` or a
            script path and its arguments.
        nproc: processes to start on this machine.
        timeout: seconds before the whole job is killed (its whole process group is killed and
            `subprocess.TimeoutExpired` is raised).
        env: extra environment variables.
        cwd: working directory.
        monitor_interval: seconds between the launcher's checks of its workers (torchrun's
            ``--monitor-interval``); once one rank fails, the launcher stops the others at its next check.

    Returns:
        The `TorchrunResult`.
    """
    monitor = [] if monitor_interval is None else [f"--monitor-interval={monitor_interval}"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               *monitor, *arguments]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=environment, cwd=cwd, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the launcher and every rank it started
        process.communicate()
        raise
    return TorchrunResult(process.returncode, stdout, stderr)
