"""``pusa-fw eval-toy --long`` end to end on the shipped bounce-world model and its VTA (few seeds, one step,
17 frames): the report holds every schedule's rolling row and the best schedule's rows for every task and
length, the calibration rows bracket the scores, the recommended arguments run through ``pusa-fw generate``
unchanged, and bad requests fail in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pusa_fw.cli import main
from pusa_fw_toy.long_schedules import LONG_SCHEDULES
from pusa_fw_toy.shipped import shipped_lora, shipped_model_dir

COMPARED = ["w9o3-clean", "w9o3-hg1.5", "w9o3-pyramid"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import torch

    out = tmp_path_factory.mktemp("long")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args = ["eval-toy", "--long", "--base", str(shipped_model_dir()), "--lora", str(shipped_lora(0)),
                "--seeds", "2", "--steps", "1", "--frames", "17", "--frames", "21", "--no-progress", "--out", str(out)]
        for name in COMPARED:
            args += ["--long-schedule", name]
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    return {"out": out, "report": json.loads((out / "long_video.json").read_text())}


def test_the_report_compares_schedules_then_runs_the_best_everywhere(report: dict) -> None:
    data = report["report"]
    rows = [row for row in data["rows"] if not row.get("calibration")]
    compared = [row["schedule"] for row in rows if row["task"] == "rolling" and row["frames"] == 17]
    assert compared == COMPARED
    best = data["best_schedule"]
    assert best in COMPARED
    assert {(row["task"], row["frames"]) for row in rows if row["schedule"] == best} == \
        {(task, frames) for task in ("rolling", "extension", "loop") for frames in (17, 21)}
    assert all(len(row["curves"]["valid"]) == row["frames"] for row in data["rows"])
    assert data["generate_args"] == LONG_SCHEDULES[best].generate_args()
    assert [gate["gate"] for gate in data["gates"]][-1] == "loop seam (px)"
    loop = next(row for row in rows if row["task"] == "loop" and row["frames"] == 17)
    assert loop["metrics"]["seam_px"] is None or loop["metrics"]["seam_px"] >= 0
    for name in ("long_video.md", "long_video.png"):
        assert (report["out"] / name).stat().st_size > 0


def test_calibration_rows_bracket_the_scores(report: dict) -> None:
    rows = {row["schedule"]: row["metrics"] for row in report["report"]["rows"] if row.get("calibration")}
    truth, static = rows["ground truth"], rows["static"]
    assert truth["valid"] == 1.0 and truth["speed_kept_videos"] == 1.0 and truth["trajectory_error_px"] < 1e-5
    assert static["speed_kept_videos"] == 0.0 and static["speed_median"] == 0.0


def test_the_recommended_arguments_run_through_generate(report: dict, tmp_path: Path) -> None:
    from pusa_fw_toy.demo import ASSETS

    out = tmp_path / "rolled.mp4"
    args = report["report"]["generate_args"]
    assert main(["generate", "--model", str(shipped_model_dir()), "--lora", str(shipped_lora(0)),
                 "--task", "rolling", *args, "--image", str(ASSETS / "rolling_first.png"),
                 "--prompt", "a blue square", "--num-frames", "17", "--height", "16", "--width", "16",
                 "--steps", "1", "--shift", "2", "--cfg", "1", "--fps", "8", "--no-progress", "--out", str(out)]) == 0
    params = json.loads(out.with_suffix(".json").read_text())["task"]["params"]
    schedule = LONG_SCHEDULES[report["report"]["best_schedule"]]
    assert {key: params[key] for key in schedule.params} == schedule.params


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--long", "--lora", "a.safetensors", "--lora", "b.safetensors"], "exactly one --lora"),
        (["--long", "--lora", "{lora}", "--long-schedule", "w9o9-magic"], "is not a long schedule"),
        (["--frames", "65"], "go with --long"),
        (["--long", "--lora", "{lora}", "--cfg", "3"], "drop --cfg"),
    ],
)
def test_bad_long_requests_fail_in_one_line(extra: list[str], message: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    extra = [item.format(lora=shipped_lora(0)) for item in extra]
    code = main(["eval-toy", "--base", str(shipped_model_dir()), *extra, "--out", str(tmp_path)])
    error = capsys.readouterr().err
    assert code != 0 and message in error and error.count("\n") == 1, error
    assert not (tmp_path / "long_video.json").exists()


def test_a_model_without_walls_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import shutil

    base = tmp_path / "base"
    shutil.copytree(shipped_model_dir(), base)
    spec = json.loads((base / "toy.json").read_text())
    spec["world"]["walls"] = "none"
    spec["world"]["speed"] = 1.0
    (base / "toy.json").write_text(json.dumps(spec))
    code = main(["eval-toy", "--long", "--base", str(base), "--lora", str(shipped_lora(0)), "--out", str(tmp_path)])
    assert code != 0 and "needs a bounce-world model" in capsys.readouterr().err


def test_the_readme_long_video_command_uses_the_manifest_arguments() -> None:
    import shlex

    from pusa_fw_toy.shipped import read_manifest

    args = read_manifest()["long_video"]["generate_args"]
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Long videos", 1)[1].split("\n## ", 1)[0]
    command = section.split("```\n", 2)[1].replace("\\\n", " ")
    words = shlex.split(command)
    assert words[:3] == ["pusa-fw", "generate", "--model"] and "rolling" in words
    start = words.index(args[0])
    assert words[start:start + len(args)] == args, "the README runs exactly the recommended settings"
