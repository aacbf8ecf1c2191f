"""``pusa-fw train``: a TOML run file, flags on top, ``--resume``, and one-line errors with exit status 2."""

from __future__ import annotations

import json

import pytest

from pusa_fw.cli import main
from pusa_fw_train.cli import parse_set_option

pytestmark = pytest.mark.usefixtures("one_thread")

RUN_FILE = """
output_dir = "run"
max_steps = 2
mode = "lora"
[model]
architecture = {dim = 32, ffn_dim = 64, num_heads = 2, num_layers = 2, text_dim = 16, freq_dim = 32, text_len = 8}
[lora]
rank = 4
alpha = 4.0
[data]
source = "random"
batch_size = 2
options = {count = 4, latent_shape = [16, 2, 4, 4], context_shape = [3, 16]}
[ptss]
p_async = 0.5
held_probability = 0.5
[logging]
tensorboard = false
every = 1
"""


def test_train_from_a_run_file_then_resume_further(tmp_path, capsys):
    run_file = tmp_path / "run.toml"
    run_file.write_text(RUN_FILE)
    assert main(["train", "--config", str(run_file), "--set", "optimizer.lr=1e-3", "--no-progress"]) == 0
    run = tmp_path / "run"  # relative to the run file
    assert capsys.readouterr().out.strip() == str(run / "checkpoints" / "step-0000002")
    saved = json.loads((run / "config.json").read_text())
    assert saved["optimizer"]["lr"] == 1e-3 and saved["ptss"]["held_probability"] == 0.5
    assert main(["train", "--resume", str(run), "--max-steps", "3", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(run / "checkpoints" / "step-0000003")
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_train_errors_are_one_line_with_status_2(tmp_path, capsys):
    run_file = tmp_path / "run.toml"
    run_file.write_text(RUN_FILE)
    assert main(["train", "--config", str(run_file), "--set", "ptss.p_async=1.5"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "ptss[p_async]" in error and "1.5" in error
    assert main(["train", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert (
        main(
            ["train", "--config", str(run_file), "--set", "lora.rank=4", "--max-steps", "1", "--no-progress"]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "run"), "--set", "lora.rank=8"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "lora.rank: run has 4, given 8" in error


def test_set_option_parses_toml_values():
    assert parse_set_option("optimizer.lr=2e-5") == ("optimizer.lr", 2e-5)
    assert parse_set_option("lora.targets=['q', 'k']") == ("lora.targets", ["q", "k"])
    assert parse_set_option("data.source=cache/") == ("data.source", "cache/")
