"""The toy quality gates: the base's t2v gates and the VTA gates, each LoRA on its own."""

from __future__ import annotations

from typing import Any

from pusa_fw_toy.gates import VTA_GATES, check_gates, check_vta_gates
from pusa_fw_toy.report import gate_lines


def _row(task: str, method: str, **per_model: list[float | None]) -> dict[str, Any]:
    metrics = {}
    for metric, values in per_model.items():
        finite = [value for value in values if value is not None]
        metrics[metric] = {"mean": sum(finite) / len(finite) if finite else None, "per_model": values}
    return {"task": task, "method": method, "models": len(next(iter(per_model.values()))), "metrics": metrics}


def _rows(i2v_direction: list[float], start_end_error: list[float], i2v_error: list[float]) -> list[dict]:
    vta = "VTA + noise 0.2"
    return [
        _row("i2v", vta, direction_acc=i2v_direction, speed_ratio=[0.9, 1.1], error_after_px=i2v_error),
        _row("i2v", "static", error_after_px=[2.5]),
        _row("start-end", vta, error_generated_px=start_end_error),
        _row("extension", vta, direction_acc=[0.85, 0.9]),
    ]


def test_vta_gates_pass_only_when_every_lora_passes() -> None:
    passing = check_vta_gates(_rows([0.82, 0.9], [0.7, 0.95], [1.2, 2.4]))
    assert passing["passed"] and len(passing["results"]) == len(VTA_GATES)
    below_static = next(result for result in passing["results"] if result["test"] == "below static")
    assert below_static["bound"] == 2.5
    one_seed_misses = check_vta_gates(_rows([0.95, 0.79], [0.7, 0.95], [1.2, 2.4]))
    assert not one_seed_misses["passed"]  # the mean 0.87 would pass; the worst LoRA does not
    assert [result["passed"] for result in one_seed_misses["results"]] == [False, True, True, True, True]
    no_better_than_static = check_vta_gates(_rows([0.9, 0.9], [0.7, 0.95], [1.2, 2.5]))
    assert not no_better_than_static["results"][2]["passed"]
    assert not check_vta_gates(_rows([0.9, 0.9], [0.7, 1.01], [1.0, 1.0]))["results"][3]["passed"]


def test_vta_gates_are_absent_without_vta_rows_and_shown_in_the_table() -> None:
    assert check_vta_gates([_row("t2v", "base", valid=[1.0])]) == {}
    rows = _rows([0.82, 0.9], [0.7, 0.95], [1.2, 2.4])
    table = "\n".join(gate_lines({"rows": rows, "gates": check_gates(rows), "vta_gates": check_vta_gates(rows)}))
    assert "VTA gates (VTA + noise 0.2, every LoRA): i2v direction_acc >= 0.8: [0.82, 0.9] (pass)" in table
    assert "i2v speed_ratio within [0.8, 1.2]" in table and "below static 2.5" in table
