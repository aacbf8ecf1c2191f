"""Checkpoint writes are atomic: a save killed (SIGKILL) at points of its file operations leaves the
previous checkpoint loadable through ``latest``, and re-saving a step never lets ``latest`` name a missing
directory."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
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


SAVE_AND_DIE = textwrap.dedent(
    """
    import os, signal, sys, torch
    import pusa_fw_train.checkpoint as checkpoint
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from test_train_checkpoint_crash import _files

    run, kill_at = Path(sys.argv[1]), int(sys.argv[2])
    calls = 0

    def dying(function):
        def wrapped(*args, **kwargs):
            global calls
            calls += 1
            if calls == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return function(*args, **kwargs)
        return wrapped

    checkpoint._fsync_path = dying(checkpoint._fsync_path)
    checkpoint.os.replace = dying(checkpoint.os.replace)
    checkpoint.atomic_write_bytes = dying(checkpoint.atomic_write_bytes)
    checkpoint.write_checkpoint(run, _files(2, 2.0), keep_last=1)
    print("completed", calls)
    """
)


def _save_and_die(run, kill_at: int) -> subprocess.CompletedProcess[str]:
    import pathlib

    write_checkpoint(run, _files(1, 1.0), keep_last=1)
    here = str(pathlib.Path(__file__).parent)
    return subprocess.run(
        [sys.executable, "-c", SAVE_AND_DIE, str(run), str(kill_at), here],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_a_save_killed_at_several_points_leaves_a_loadable_checkpoint(tmp_path):
    whole = _save_and_die(tmp_path / "whole", 10**9)
    assert whole.returncode == 0, whole.stderr[-2000:]
    operations = int(whole.stdout.split()[-1])
    assert operations > 5
    # the first and the last file operation, and one in between (fsyncs, the rename, the pointer, pruning)
    for kill_at in sorted({1, operations // 2, operations}):
        run = tmp_path / f"kill-{kill_at}"
        result = _save_and_die(run, kill_at)
        assert result.returncode == -9, result.stderr[-2000:]
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
