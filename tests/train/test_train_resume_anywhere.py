"""Resume is not pinned to one place or one span: a moved run directory keeps writing where it is now, and a
changed ``max_steps`` keeps the learning-rate law's span (no jump)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from pusa_fw.cli import main
from pusa_fw_train import Trainer
from pusa_fw_wan.testing.train import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _records(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_a_moved_run_directory_resumes_into_itself_bit_exact(tmp_path, capsys):
    Trainer(tiny_config(tmp_path / "straight", max_steps=4)).run()
    Trainer(tiny_config(tmp_path / "old-place", max_steps=4)).run(stop_at=2)
    moved = tmp_path / "other-machine" / "run"
    moved.parent.mkdir()
    shutil.move(str(tmp_path / "old-place"), str(moved))
    assert main(["train", "--resume", str(moved), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(moved / "checkpoints" / "step-0000004")
    assert not (tmp_path / "old-place").exists(), "the resumed run wrote into the directory it came from"
    straight = load_file(str(tmp_path / "straight" / "checkpoints" / "step-0000004" / "adapter.safetensors"))
    resumed = load_file(str(moved / "checkpoints" / "step-0000004" / "adapter.safetensors"))
    assert all(torch.equal(resumed[name], tensor) for name, tensor in straight.items())
    assert json.loads((moved / "checkpoints" / "step-0000004" / "config.json").read_text())["output_dir"] == str(moved)


def test_a_longer_max_steps_on_resume_keeps_the_cosine_span(tmp_path):
    Trainer(tiny_config(tmp_path / "straight", max_steps=4)).run()
    Trainer(tiny_config(tmp_path / "extended", max_steps=4)).run(stop_at=2)
    resumed = Trainer.resume(tmp_path / "extended", tiny_config(tmp_path / "extended", max_steps=6))
    assert resumed.config.optimizer.decay_steps == 4
    resumed.run()
    straight = [record["lr"] for record in _records(tmp_path / "straight")]
    extended = [record["lr"] for record in _records(tmp_path / "extended")]
    assert extended[:4] == straight, "the learning rate of steps 1-4 does not jump when max_steps changes"
    assert extended[4:] == [0.0, 0.0], "past the span the cosine stays at its floor (min_lr_ratio 0)"
    again = Trainer.resume(tmp_path / "extended", tiny_config(tmp_path / "extended", max_steps=7))
    assert again.config.optimizer.decay_steps == 4, "the span stays fixed over further resumes"


def test_resume_with_output_dir_is_one_line(tmp_path, capsys):
    Trainer(tiny_config(tmp_path / "run", max_steps=2)).run()
    assert main(["train", "--resume", str(tmp_path / "run"), "--output-dir", str(tmp_path / "x")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "--output-dir cannot be combined with --resume" in error
