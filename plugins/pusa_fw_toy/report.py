"""The eval-toy report: a JSON file, a markdown table and a PNG plot, each written atomically."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pusa_fw.io.atomic import atomic_path, atomic_write_bytes

__all__ = ["COLUMNS", "markdown_table", "save_plot", "write_report"]

COLUMNS: dict[str, tuple[str, str]] = {
    "valid": ("valid", "{:.2f}"),
    "error_after_px": ("err after (px)", "{:.2f}"),
    "error_generated_px": ("err generated (px)", "{:.2f}"),
    "fit_within_1px": ("fit <= 1 px", "{:.2f}"),
    "speed_ratio": ("speed / truth", "{:.2f}"),
    "direction_acc": ("direction acc", "{:.2f}"),
    "psnr_given_db": ("PSNR given (dB)", "{:.1f}"),
}
"""Metric -> (column title, number format) of the markdown table."""
_PLOTTED = ("error_after_px", "error_generated_px", "valid", "speed_ratio", "direction_acc", "psnr_given_db")


def _cell(entry: dict[str, Any], form: str) -> str:
    mean = entry["mean"]
    if mean is None:
        return "-"
    text = form.format(mean)
    if entry["min"] is not None and entry["max"] is not None and entry["max"] > entry["min"]:
        text += " ± " + form.format((entry["max"] - entry["min"]) / 2)
    return text


def markdown_table(report: dict[str, Any]) -> str:
    """One row per (task, method): the mean over models, ± half the range over training seeds."""
    header = ["task", "method", "models"] + [title for title, _ in COLUMNS.values()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in report["rows"]:
        cells = [row["task"], row["method"], str(row["models"])]
        cells += [_cell(row["metrics"][metric], form) for metric, (_, form) in COLUMNS.items()]
        lines.append("| " + " | ".join(cells) + " |")
    gates = report.get("gates") or {}
    if gates:
        verdicts = ", ".join(
            f"{metric} {result['value'] if result['value'] is None else round(result['value'], 3)} "
            f"({'pass' if result['passed'] else 'FAIL'})" for metric, result in gates["results"].items()
        )
        lines += ["", f"Quality gates ({gates['checked']}): {verdicts}."]
    return "\n".join(lines) + "\n"


def save_plot(report: dict[str, Any], path: Path) -> None:
    """Bars per task and method for the main metrics, with the range over training seeds as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(row["task"] for row in report["rows"]))
    methods = list(dict.fromkeys(row["method"] for row in report["rows"]))
    figure, axes = plt.subplots(2, 3, figsize=(15, 8))
    width = 0.8 / max(1, len(methods))
    for axis, metric in zip(axes.flat, _PLOTTED):
        for index, method in enumerate(methods):
            xs, heights, low, high = [], [], [], []
            for position, task in enumerate(tasks):
                row = next((r for r in report["rows"] if r["task"] == task and r["method"] == method), None)
                entry = row["metrics"][metric] if row else None
                if entry is None or entry["mean"] is None or not math.isfinite(entry["mean"]):
                    continue
                xs.append(position + (index - (len(methods) - 1) / 2) * width)
                heights.append(entry["mean"])
                low.append(entry["mean"] - entry["min"])
                high.append(entry["max"] - entry["mean"])
            axis.bar(xs, heights, width, yerr=[low, high], label=method, capsize=2)
        axis.set_xticks(range(len(tasks)), tasks)
        axis.set_title(COLUMNS[metric][0])
    axes.flat[0].legend(fontsize=7)
    figure.suptitle(f"eval-toy: {report['settings']['num_seeds']} held-out seeds per task")
    figure.tight_layout()
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png", dpi=80)
    plt.close(figure)


def write_report(report: dict[str, Any], directory: Path) -> dict[str, Path]:
    """Write ``eval_toy.json``, ``eval_toy.md`` and ``eval_toy.png`` into `directory` (created if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / "eval_toy.json", "markdown": directory / "eval_toy.md",
             "plot": directory / "eval_toy.png"}
    atomic_write_bytes(paths["json"], json.dumps(report, indent=2, allow_nan=False).encode())
    atomic_write_bytes(paths["markdown"], markdown_table(report).encode())
    save_plot(report, paths["plot"])
    return paths
