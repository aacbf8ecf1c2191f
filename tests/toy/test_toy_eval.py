"""eval-toy smoke run: 4 held-out seeds, a random base and two random VTA LoRAs -> every row of the table,
with the calibration rows telling a perfect tracker result from a static one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pusa_fw.cli import main
from pusa_fw_toy.evaluate import expected_rows


def test_eval_toy_produces_every_row(toy_dir: Path, toy_loras: list[Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "eval"
    status = main(["eval-toy", "--base", str(toy_dir), "--lora", str(toy_loras[0]), "--lora", str(toy_loras[1]),
                   "--seeds", "4", "--steps", "2", "--batch-size", "4", "--out", str(out)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    report = json.loads((out / "eval_toy.json").read_text())
    rows = {(row["task"], row["method"]): row for row in report["rows"]}
    expected = expected_rows(["i2v", "start-end", "extension", "t2v"], with_vta=True)
    assert list(rows) == expected and len(expected) == 3 * 6 + 4
    for (task, method), row in rows.items():
        assert row["models"] == (2 if method.startswith("VTA") else 1)
        assert row["metrics"]["valid"]["mean"] is not None
        assert len(row["metrics"]["valid"]["per_model"]) == row["models"]
    truth, static = rows[("i2v", "ground truth")]["metrics"], rows[("i2v", "static")]["metrics"]
    assert truth["valid"]["mean"] == 1.0 and truth["direction_acc"]["mean"] == 1.0
    assert truth["error_after_px"]["mean"] < 1e-3 and truth["fit_within_1px"]["mean"] == 1.0
    assert abs(truth["speed_ratio"]["mean"] - 1.0) < 1e-6 and truth["psnr_given_db"]["mean"] == 100.0
    assert static["direction_acc"]["mean"] == 0.0 and static["speed"]["mean"] < 1e-6
    assert static["error_after_px"]["mean"] > 1.0
    clean = rows[("i2v", "base + sigma 0")]["metrics"]["psnr_given_db"]
    assert clean["mean"] == 100.0  # sigma-0 hold + lossless codec: the given frame comes back exactly
    assert set(report["gates"]["results"]) == {"valid", "fit_within_1px", "speed_ratio", "direction_acc"}
    table = (out / "eval_toy.md").read_text()
    assert all(f"| {task} | {method} |" in table for task, method in expected)
    assert (out / "eval_toy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| t2v | VTA |" in captured.out
    for row in rows.values():  # every video's speed is kept, one list per model
        assert len(row["speed_ratios"]) == row["models"] and all(len(model) == 4 for model in row["speed_ratios"])
    assert all(abs(ratio - 1.0) < 1e-6 for ratio in rows[("i2v", "ground truth")]["speed_ratios"][0])
    assert all(ratio < 1e-6 for ratio in rows[("i2v", "static")]["speed_ratios"][0])
    assert "- t2v / base: [" in table and "- i2v / VTA + noise 0.2: [" in table
    vta_gates = report["vta_gates"]
    assert len(vta_gates["results"]) == 5 and all(len(result["per_model"]) == 2 for result in vta_gates["results"])
    assert "VTA gates (VTA + noise 0.2, every LoRA): i2v direction_acc >= 0.8: [" in table


def test_speed_histogram_bins_ratios_and_leaves_out_untracked_videos() -> None:
    from pusa_fw_toy.report import HISTOGRAM_BINS, speed_histogram

    counts = speed_histogram([0.0, 0.05, 0.24, 0.95, 1.0, 1.04, 3.0, None, float("nan")])
    assert len(counts) == HISTOGRAM_BINS and sum(counts) == 7
    assert counts[0] == 2 and counts[2] == 1 and counts[9] == 1 and counts[10] == 2 and counts[-1] == 1


def test_eval_toy_without_loras_runs_the_base_rows_only(toy_dir: Path, tmp_path: Path) -> None:
    assert main(["eval-toy", "--base", str(toy_dir), "--seeds", "2", "--steps", "1", "--task", "i2v",
                 "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "eval_toy.json").read_text())
    assert [(row["task"], row["method"]) for row in report["rows"]] == expected_rows(["i2v"], with_vta=False)
    assert report["gates"] == {} and report["vta_gates"] == {}


def test_eval_toy_bad_inputs_exit_2_with_one_line(toy_dir: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    assert main(["eval-toy", "--base", str(toy_dir), "--task", "loop", "--out", str(tmp_path)]) == 2
    assert "no toy setup" in capsys.readouterr().err
    assert main(["eval-toy", "--base", str(toy_dir), "--lora", str(tmp_path / "none.safetensors"),
                 "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval-toy", "--base", str(tmp_path / "nothing"), "--out", str(tmp_path)]) == 2
    assert "not a directory" in capsys.readouterr().err.strip()


def _report(ratios: list[float | None], direction: float) -> dict:
    metrics = {name: {"mean": value} for name, value in
               (("valid", 1.0), ("fit_within_1px", 0.9), ("speed_ratio", 0.7), ("direction_acc", direction))}
    return {"rows": [{"task": "t2v", "method": "base", "metrics": metrics, "speed_ratios": [ratios]}]}


def test_gate_table_separates_still_videos_from_wrong_headings(tmp_path: Path, toy_dir: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    from pusa_fw_toy.gate_table import gate_row, main as gate_table_main

    row = gate_row(_report([0.0, 0.1, 1.0, 0.9, None], direction=0.25))
    assert row["still"] == 0.5 and row["direction_of_moving"] == 0.5 and row["videos"] == 5
    assert row["histogram"][0] == 1 and row["histogram"][1] == 1 and row["histogram"][9] == 1
    assert main(["eval-toy", "--base", str(toy_dir), "--seeds", "3", "--steps", "1", "--task", "t2v",
                 "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert gate_table_main([f"tiny={tmp_path / 'run'}", f"again={tmp_path / 'run'}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("| tiny | ") and lines[3].startswith("| again | ") and len(lines) == 4
    assert lines[2].split("|")[2:] == lines[3].split("|")[2:]
    assert gate_table_main([str(tmp_path)]) == 2
    assert "is not NAME=DIR" in capsys.readouterr().err


def test_eval_toy_takes_a_sampler_and_a_cache_from_the_command_line(toy_dir: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    assert main(["eval-toy", "--base", str(toy_dir), "--seeds", "2", "--steps", "3", "--task", "t2v",
                 "--sampler", "lcm", "--cache", "teacache", "--cache-params", '{"threshold": 0.4}',
                 "--out", str(tmp_path / "run")]) == 0
    report = json.loads((tmp_path / "run" / "eval_toy.json").read_text())
    assert report["settings"]["sampler"] == "lcm" and report["settings"]["cache"] == "teacache"
    assert report["settings"]["cache_params"] == {"threshold": 0.4}
    (base,) = [row for row in report["rows"] if row["method"] == "base"]
    assert 0 < base["work"]["token_block_fraction"] <= 1
    capsys.readouterr()
    assert main(["eval-toy", "--base", str(toy_dir), "--cache-params", "[1]", "--out", str(tmp_path)]) == 2
    assert "--cache-params '[1]' is not a JSON object" in capsys.readouterr().err
