"""The toy model's quality gates, checked on an eval-toy report's rows.

- `GATES`: t2v of the base model (64+ held-out seeds, prompts without direction words).
- `VTA_GATES`: the VTA LoRAs with Pusa's noise multiplier 0.2 (the ``VTA + noise 0.2`` rows): image-to-video
  that moves the way the given frame points at the world's speed, and beats a static copy in the frames
  right after it; start-end that stays within 1 px of the true path between the keyframes; extension that
  keeps the given clip's direction. Every LoRA (training seed) must pass on its own: a gate is checked on
  the worst of them, never on their mean.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GATES", "VTA_GATES", "check_gates", "check_vta_gates"]

GATES: dict[str, float | tuple[float, float]] = {
    "valid": 0.9, "fit_within_1px": 0.8, "speed_ratio": (0.8, 1.2), "direction_acc": 0.8,
}
"""Quality gates on the base model's t2v row: metric -> lower bound, or (low, high)."""
VTA_GATES: list[tuple[str, str, str, Any]] = [
    ("i2v", "direction_acc", ">=", 0.8),
    ("i2v", "speed_ratio", "within", (0.8, 1.2)),
    ("i2v", "error_after_px", "below static", None),
    ("start-end", "error_generated_px", "<=", 1.0),
    ("extension", "direction_acc", ">=", 0.8),
]
"""(task, metric, test, bound) on each LoRA of the task's ``VTA + noise 0.2`` row."""
VTA_METHOD = "VTA + noise 0.2"


def _row(rows: list[dict[str, Any]], task: str, method: str) -> dict[str, Any] | None:
    return next((row for row in rows if row["task"] == task and row["method"] == method), None)


def check_gates(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The quality gates on the base model's t2v row (empty when t2v was not run)."""
    row = _row(rows, "t2v", "base")
    if row is None:
        return {}
    results = {}
    for metric, bound in GATES.items():
        value = row["metrics"][metric]["mean"]
        if isinstance(bound, tuple):
            passed = value is not None and bound[0] <= value <= bound[1]
        else:
            passed = value is not None and value >= bound
        results[metric] = {"value": value, "bound": bound, "passed": passed}
    return {"checked": "t2v of the base model", "results": results,
            "passed": all(result["passed"] for result in results.values())}


def _passes(value: float | None, test: str, bound: Any) -> bool:
    if value is None:
        return False
    if test == ">=":
        return value >= bound
    if test == "<=":
        return value <= bound
    if test == "within":
        return bound[0] <= value <= bound[1]
    return value < bound  # "below static": bound is the static row's value


def check_vta_gates(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`VTA_GATES` on every LoRA's value (empty when a needed row is missing, e.g. no LoRA was given)."""
    results = []
    for task, metric, test, bound in VTA_GATES:
        row = _row(rows, task, VTA_METHOD)
        if row is None:
            return {}
        if test == "below static":
            static = _row(rows, task, "static")
            if static is None:
                return {}
            bound = static["metrics"][metric]["mean"]
        values = row["metrics"][metric]["per_model"]
        passed = bool(values) and all(_passes(value, test, bound) for value in values)
        results.append({"task": task, "metric": metric, "test": test, "bound": bound, "per_model": values,
                        "passed": passed})
    return {"checked": f"{VTA_METHOD}, every LoRA", "results": results,
            "passed": all(result["passed"] for result in results)}
