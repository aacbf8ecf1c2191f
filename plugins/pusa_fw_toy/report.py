"""The eval-toy report: a JSON file, a markdown table and a PNG plot, each written atomically."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pusa_fw.io.atomic import atomic_path, atomic_write_bytes

__all__ = ["COLUMNS", "HISTOGRAM_BINS", "gate_lines", "headline_rows", "markdown_table", "save_plot", "speed_histogram",
           "still_share",
           "write_report"]

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
HISTOGRAM_BINS = 20
"""Bins of width 0.1 over a speed ratio of 0 to 2; faster videos count in the last bin."""
STILL = 0.25
"""A video slower than this share of the truth's speed has no direction (`pusa_fw_toy.metrics`)."""


def speed_histogram(ratios: list[float | None]) -> list[int]:
    """Counts of per-video speed ratios in `HISTOGRAM_BINS` bins of width 0.1 (untracked videos left out)."""
    counts = [0] * HISTOGRAM_BINS
    for ratio in ratios:
        if ratio is not None and math.isfinite(ratio):
            counts[min(int(ratio * 10), HISTOGRAM_BINS - 1)] += 1
    return counts


def still_share(ratios: list[float | None]) -> float:
    """Share of the tracked videos slower than `STILL` of the truth's speed (NaN when none is tracked)."""
    tracked = [ratio for ratio in ratios if ratio is not None and math.isfinite(ratio)]
    return sum(ratio < STILL for ratio in tracked) / len(tracked) if tracked else float("nan")


def headline_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per task, the row whose per-video speeds the report shows: the base's t2v, and for the other tasks
    Pusa's ``VTA + noise 0.2`` (``base + replacement`` without a LoRA)."""
    chosen = []
    for task in dict.fromkeys(row["task"] for row in report["rows"]):
        rows = {row["method"]: row for row in report["rows"] if row["task"] == task and "speed_ratios" in row}
        for method in ("base", "VTA + noise 0.2", "base + replacement"):
            if method in rows:
                chosen.append(rows[method])
                break
    return chosen


def _cell(entry: dict[str, Any], form: str) -> str:
    mean = entry["mean"]
    if mean is None:
        return "-"
    text = form.format(mean)
    if entry["min"] is not None and entry["max"] is not None and entry["max"] > entry["min"]:
        text += " ± " + form.format((entry["max"] - entry["min"]) / 2)
    return text


def _bound(bound: Any) -> str:
    """A gate bound as text: a number, a range ``[low, high]``, or nothing (undefined static value)."""
    if isinstance(bound, (list, tuple)):
        return "[" + ", ".join(f"{value:g}" for value in bound) + "]"
    return "-" if bound is None else f"{bound:.3g}"


def gate_lines(report: dict[str, Any]) -> list[str]:
    """The verdict lines of the report's base gates and VTA gates (blank line first; none when unchecked)."""
    lines: list[str] = []
    gates = report.get("gates") or {}
    if gates:
        verdicts = ", ".join(
            f"{metric} {result['value'] if result['value'] is None else round(result['value'], 3)} "
            f"({'pass' if result['passed'] else 'FAIL'})" for metric, result in gates["results"].items()
        )
        lines += ["", f"Quality gates ({gates['checked']}): {verdicts}."]
    vta_gates = report.get("vta_gates") or {}
    if vta_gates:
        verdicts = ", ".join(
            f"{result['task']} {result['metric']} {result['test']} {_bound(result['bound'])}: "
            f"{[None if value is None else round(value, 3) for value in result['per_model']]}"
            f" ({'pass' if result['passed'] else 'FAIL'})" for result in vta_gates["results"]
        )
        lines += ["", f"VTA gates ({vta_gates['checked']}): {verdicts}."]
    return lines


def markdown_table(report: dict[str, Any]) -> str:
    """One row per (task, method): the mean over models, ± half the range over training seeds."""
    header = ["task", "method", "models"] + [title for title, _ in COLUMNS.values()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in report["rows"]:
        cells = [row["task"], row["method"], str(row["models"])]
        cells += [_cell(row["metrics"][metric], form) for metric, (_, form) in COLUMNS.items()]
        lines.append("| " + " | ".join(cells) + " |")
    lines += gate_lines(report)
    headlines = headline_rows(report)
    if headlines:
        lines += ["", f"Per-video speed / truth, bins of 0.1 from 0 to 2 (all models; share slower than {STILL}):", ""]
        for row in headlines:
            ratios = [ratio for model in row["speed_ratios"] for ratio in model]
            lines.append(f"- {row['task']} / {row['method']}: {speed_histogram(ratios)} "
                         f"(still {still_share(ratios):.2f})")
    return "\n".join(lines) + "\n"


def save_plot(report: dict[str, Any], path: Path) -> None:
    """Bars per task and method for the main metrics, with the range over training seeds as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(row["task"] for row in report["rows"]))
    methods = list(dict.fromkeys(row["method"] for row in report["rows"]))
    figure, axes = plt.subplots(2, 4, figsize=(20, 8))
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
    _plot_speed_histograms(report, axes.flat[len(_PLOTTED)])
    axes.flat[len(_PLOTTED) + 1].axis("off")
    figure.suptitle(f"eval-toy: {report['settings']['num_seeds']} held-out seeds per task")
    figure.tight_layout()
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png", dpi=80)
    plt.close(figure)


def _plot_speed_histograms(report: dict[str, Any], axis: Any) -> None:
    """Step histograms of per-video speed / truth for the `headline_rows`."""
    edges = [index / 10 for index in range(HISTOGRAM_BINS + 1)]
    for row in headline_rows(report):
        counts = speed_histogram([ratio for model in row["speed_ratios"] for ratio in model])
        axis.stairs(counts, edges, label=f"{row['task']} / {row['method']}")
    axis.axvline(STILL, color="grey", linestyle=":", linewidth=1)
    axis.axvline(1.0, color="black", linestyle="--", linewidth=1)
    axis.set_title("per-video speed / truth (count)")
    axis.legend(fontsize=7)


def write_report(report: dict[str, Any], directory: Path) -> dict[str, Path]:
    """Write ``eval_toy.json``, ``eval_toy.md`` and ``eval_toy.png`` into `directory` (created if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / "eval_toy.json", "markdown": directory / "eval_toy.md",
             "plot": directory / "eval_toy.png"}
    atomic_write_bytes(paths["json"], json.dumps(report, indent=2, allow_nan=False).encode())
    atomic_write_bytes(paths["markdown"], markdown_table(report).encode())
    save_plot(report, paths["plot"])
    return paths
