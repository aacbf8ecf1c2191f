"""Bad input to the newer commands (prepare, train, export-lora, toy-init, toy-pack, eval-toy): one line on
stderr, exit 2, no traceback and nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from pusa_fw.cli import main

HUGE = str(2**64)  # beyond any 64-bit seed or step counter


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("not a directory")
    (tmp_path / "empty").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "bad.toml").write_text("max_steps = [\n")
    (tmp_path / "run.toml").write_text(
        'output_dir = "run"\nmax_steps = 1\n[model]\npath = "empty"\n'
        '[data]\nsource = "random"\nbatch_size = 1\n'
    )
    return tmp_path


CASES = {
    # fixed: used to raise FileExistsError / ValueError / ZeroDivisionError, or leave a directory behind
    "toy-init into a file": (["toy-init", "file"], "existing file"),
    "toy-init seed beyond 64 bits": (["toy-init", "t", "--seed", HUGE], "seed"),
    "toy-init negative seed": (["toy-init", "t", "--seed", "-1"], "seed"),
    "toy-init one frame": (["toy-init", "t", "--num-frames", "1"], "at least 2 frames"),
    "toy-init zero heads writes nothing": (["toy-init", "t", "--heads", "0"], "num_heads"),
    "toy-init dim not divisible": (["toy-init", "t", "--dim", "7"], "divisible"),
    "train steps beyond 64 bits": (["train", "--config", "run.toml", "--max-steps", HUGE], "max_steps"),
    "train seed beyond 64 bits": (["train", "--config", "run.toml", "--set", f"seed={HUGE}"], "seed"),
    "train negative seed": (["train", "--config", "run.toml", "--set", "seed=-1"], "seed"),
    "eval-toy seeds huge": (["eval-toy", "--base", "empty", "--out", "e", "--seeds", HUGE], "num_seeds"),
    # already one line
    "toy-init under a file": (["toy-init", "file/t"], "not a directory"),
    "prepare missing model": (["prepare", "data", "--out", "c", "--model", "nope"], "does not exist"),
    "prepare zero clips": (["prepare", "data", "--out", "c", "--clips-per-video", "0", "--model", "empty"],
                           "clips_per_video"),
    "train missing config": (["train", "--config", "nope.toml"], "does not exist"),
    "train malformed toml": (["train", "--config", "bad.toml"], "cannot read training config"),
    "train unknown --set key": (["train", "--config", "run.toml", "--set", "optimizer.lrr=1"], "lrr"),
    "train malformed --set": (["train", "--config", "run.toml", "--set", "=1"], "SECTION.KEY=VALUE"),
    "train negative steps": (["train", "--config", "run.toml", "--max-steps", "-1"], "max_steps"),
    "train zero batch": (["train", "--config", "run.toml", "--set", "data.batch_size=0"], "batch_size"),
    "train resume nowhere": (["train", "--resume", "nope"], "checkpoint"),
    "export-lora missing source": (["export-lora", "nope", "--out", "x.safetensors"], "neither"),
    "export-lora source is a file": (["export-lora", "file", "--out", "x.safetensors"], "neither"),
    "toy-pack missing source": (["toy-pack", "nope", "--out", "p"], "neither"),
    "eval-toy base is a file": (["eval-toy", "--base", "file", "--out", "e"], "not a directory"),
    "eval-toy zero batch": (["eval-toy", "--base", "empty", "--out", "e", "--batch-size", "0"], "batch_size"),
    "eval-toy negative steps": (["eval-toy", "--base", "empty", "--out", "e", "--steps", "-3"], "steps"),
    "eval-toy unknown task": (["eval-toy", "--base", "empty", "--out", "e", "--task", "nope"], "nope"),
}


@pytest.mark.parametrize("argv, needle", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_one_line_and_exit_2(workdir: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                          needle: str) -> None:
    before = sorted(path.relative_to(workdir) for path in workdir.rglob("*"))
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pusa-fw: error: "), captured.err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert sorted(path.relative_to(workdir) for path in workdir.rglob("*")) == before, "nothing is written"
