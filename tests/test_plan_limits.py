"""Absurd plan sizes are refused with one line before anything is allocated (CLI exit 2, no traceback)."""

from __future__ import annotations

import pytest

from pusa_fw.cli import main
from pusa_fw.errors import PlanError
from pusa_fw.schedule import MAX_NUM_STEPS, MAX_PLAN_CELLS, check_plan_size

CASES = [
    (["plan", "t2v", "--num-steps", str(10**12)], f"is more than {MAX_NUM_STEPS}"),
    (["plan", "t2v", "--num-frames", str(4 * 10**15 + 1)], f"more than {MAX_PLAN_CELLS} cells"),
    (["plan", "rolling", "--num-frames", "100001"], "use fewer steps"),
]


@pytest.mark.parametrize(("argv", "expected"), CASES, ids=["steps", "frames", "rolling-frames"])
def test_huge_plans_are_one_line_errors(argv: list[str], expected: str, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pusa-fw: error: ") and expected in lines[0], lines


def test_plan_size_limits_are_inclusive() -> None:
    check_plan_size(MAX_NUM_STEPS, MAX_PLAN_CELLS // MAX_NUM_STEPS)
    with pytest.raises(PlanError, match="steps"):
        check_plan_size(MAX_NUM_STEPS + 1, 1)
    with pytest.raises(PlanError, match="cells"):
        check_plan_size(MAX_NUM_STEPS, MAX_PLAN_CELLS // MAX_NUM_STEPS + 1)
