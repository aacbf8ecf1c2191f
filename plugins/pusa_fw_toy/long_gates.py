"""The long-video gates (issue 25): rolling 65 frames from one image with the best schedule, VTA + the
recommended policy, and the loop's seam. A gate that misses stays a miss in the report and the manifest.

| gate                  | metric (row)                  | pass when        |
|-----------------------|-------------------------------|------------------|
| validity              | valid (rolling)               | >= 0.95          |
| colour kept           | colour_kept (rolling)         | >= 0.99          |
| speed kept            | speed_kept_videos (rolling)   | >= 0.90          |
| direction             | direction_segments (rolling)  | >= 0.90          |
| turns at walls        | turns (rolling)               | >= 0.90          |
| start-end validity    | valid_gap (rolling)           | <= 0.05          |
| start-end speed       | speed_gap (rolling)           | <= 0.05          |
| loop seam             | seam_px (loop, median)        | <= 1.0 px        |
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["LONG_GATES", "check_long_gates", "gate_score"]

LONG_GATES: list[tuple[str, str, str, str, float]] = [
    ("validity", "rolling", "valid", ">=", 0.95),
    ("colour kept", "rolling", "colour_kept", ">=", 0.99),
    ("speed kept in every segment", "rolling", "speed_kept_videos", ">=", 0.90),
    ("direction agrees with the nose", "rolling", "direction_segments", ">=", 0.90),
    ("turns back at walls", "rolling", "turns", ">=", 0.90),
    ("start-end validity gap", "rolling", "valid_gap", "<=", 0.05),
    ("start-end speed gap", "rolling", "speed_gap", "<=", 0.05),
    ("loop seam (px)", "loop", "seam_px", "<=", 1.0),
]
"""(gate, row task, metric, comparison, threshold)."""


def _passes(value: float | None, comparison: str, threshold: float) -> bool:
    if value is None or not math.isfinite(value):
        return False
    return value >= threshold if comparison == ">=" else value <= threshold


def gate_score(row: dict[str, Any]) -> tuple[int, float]:
    """How a rolling row ranks as the best schedule: rolling gates passed, then valid + speed kept + turns."""
    metrics = row["metrics"]
    passed = sum(_passes(metrics[metric], comparison, threshold)
                 for _, task, metric, comparison, threshold in LONG_GATES if task == "rolling")
    tie = sum(metrics[key] or 0.0 for key in ("valid", "speed_kept_videos", "turns"))
    return passed, tie


def check_long_gates(rows: list[dict[str, Any]], schedule: str, frames: int) -> list[dict[str, Any]]:
    """Each gate's value and verdict on the rows of `schedule` at `frames` (missing rows fail the gate)."""
    found = {row["task"]: row for row in rows
             if row["schedule"] == schedule and row["frames"] == frames and not row.get("calibration")}
    results = []
    for gate, task, metric, comparison, threshold in LONG_GATES:
        value = found[task]["metrics"][metric] if task in found else None
        results.append({"gate": gate, "task": task, "metric": metric, "value": value,
                        "rule": f"{comparison} {threshold}", "passed": _passes(value, comparison, threshold)})
    return results
