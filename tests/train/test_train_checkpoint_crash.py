"""Checkpoint writes are atomic: a save killed (SIGKILL) at any of its file operations leaves the
previous checkpoint loadable through ``latest``, and re-saving a step never lets ``latest`` name a missing
directory."""

from __future__ import annotations

import os
import signal

import torch

from pusa_fw_train.checkpoint import CheckpointFiles, latest_checkpoint, read_checkpoint, write_checkpoint


def _files(step: int, value: float) -> CheckpointFiles:
    return CheckpointFiles(
        weights={"w": torch.full((4,), value)},
        weights_kind="model",
        weights_metadata={"format": "pusa-fw-model", "step": str(step)},
        ema=None,
        optimizer_tensors={"w.exp_avg": torch.zeros(4)},
        optimizer_json={"param_names": ["w"], "param_groups": []},
        rng={"rank0.torch": torch.zeros(2, dtype=torch.uint8)},
        trainer_state={"step": step, "epoch": 0, "batch": step},
        config={"max_steps": 9},
    )


def _save_and_die(run, kill_at: int) -> tuple[int, int]:
    """Save step 2 over step 1 in a forked child that SIGKILLs itself at its `kill_at`-th file operation.

    Returns:
        ``(signal that ended the child or 0, file operations it did)``.
    """
    import pusa_fw_train.checkpoint as checkpoint

    write_checkpoint(run, _files(1, 1.0), keep_last=1)
    counter = run / "operations"
    pid = os.fork()
    if pid == 0:  # the child: count file operations, die at the chosen one
        calls = 0

        def dying(function):
            def wrapped(*args, **kwargs):
                nonlocal calls
                calls += 1
                counter.write_text(str(calls))
                if calls == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                return function(*args, **kwargs)

            return wrapped

        try:
            checkpoint._fsync_path = dying(checkpoint._fsync_path)
            checkpoint.os.replace = dying(checkpoint.os.replace)
            checkpoint.atomic_write_bytes = dying(checkpoint.atomic_write_bytes)
            checkpoint.write_checkpoint(run, _files(2, 2.0), keep_last=1)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return (os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0), int(counter.read_text())


def test_a_save_killed_at_several_points_leaves_a_loadable_checkpoint(tmp_path):
    killed, operations = _save_and_die(tmp_path / "whole", 10**9)
    assert killed == 0 and operations > 5
    assert read_checkpoint(latest_checkpoint(tmp_path / "whole")).trainer_state["step"] == 2
    for kill_at in range(1, operations + 1):  # every file operation of the save
        run = tmp_path / f"kill-{kill_at}"
        killed, _ = _save_and_die(run, kill_at)
        assert killed == signal.SIGKILL
        saved = read_checkpoint(latest_checkpoint(run))
        step = int(saved.trainer_state["step"])
        assert step in (1, 2), f"killed at operation {kill_at}"
        assert float(saved.weights["w"][0]) == float(step), "a checkpoint mixes two saves"


def test_resaving_a_step_never_points_latest_at_a_missing_directory(tmp_path, monkeypatch):
    import pusa_fw_train.checkpoint as checkpoint

    write_checkpoint(tmp_path, _files(3, 1.0), keep_last=2)
    seen = []

    def check_latest():
        seen.append(read_checkpoint(latest_checkpoint(tmp_path)).trainer_state["step"])

    for name in ("rmtree",):
        original = getattr(checkpoint.shutil, name)

        def watched(*args, _original=original, **kwargs):
            check_latest()
            result = _original(*args, **kwargs)
            check_latest()
            return result

        monkeypatch.setattr(checkpoint.shutil, name, watched)
    original_replace = checkpoint.os.replace

    def watched_replace(*args, **kwargs):
        check_latest()
        result = original_replace(*args, **kwargs)
        check_latest()
        return result

    monkeypatch.setattr(checkpoint.os, "replace", watched_replace)
    write_checkpoint(tmp_path, _files(3, 5.0), keep_last=2)
    assert len(seen) >= 4 and set(seen) == {3}
    assert float(read_checkpoint(latest_checkpoint(tmp_path)).weights["w"][0]) == 5.0
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == ["latest", "step-0000003"]
