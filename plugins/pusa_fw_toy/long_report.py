"""The eval-toy ``--long`` report: ``long_video.json``, a markdown table and the drift plot, written atomically."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pusa_fw.io.atomic import atomic_path, atomic_write_bytes

__all__ = ["LONG_COLUMNS", "long_markdown", "save_drift_plot", "write_long_report"]

LONG_COLUMNS: dict[str, tuple[str, str]] = {
    "valid": ("valid", "{:.3f}"),
    "colour_kept": ("colour", "{:.3f}"),
    "size_kept": ("size", "{:.2f}"),
    "inside": ("inside", "{:.3f}"),
    "speed_kept_videos": ("speed kept", "{:.2f}"),
    "speed_median": ("median step (px)", "{:.2f}"),
    "direction_segments": ("direction", "{:.2f}"),
    "turns": ("turns", "{:.2f}"),
    "contacts_per_video": ("contacts/video", "{:.1f}"),
    "valid_gap": ("valid gap", "{:.3f}"),
    "speed_gap": ("speed gap", "{:.3f}"),
    "trajectory_error_px": ("traj. err (px)", "{:.2f}"),
    "seam_px": ("seam (px)", "{:.2f}"),
}
"""Metric -> (column title, format) of the table."""
_CURVES = (("valid", "valid (share of videos)"), ("speed", "step (px/frame, unfolded)"),
           ("trajectory_error_px", "distance from the true path (px)"))


def _cell(value: Any, form: str) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else form.format(value)


def long_markdown(report: dict[str, Any]) -> str:
    """The table (one row per task, length and schedule), the best schedule and the gate lines."""
    header = ["task", "frames", "schedule", "s"] + [title for title, _ in LONG_COLUMNS.values()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in report["rows"]:
        seconds = "-" if row.get("calibration") else f"{row['seconds']:.0f}"
        cells = [row["task"], str(row["frames"]), row["schedule"], seconds]
        cells += [_cell(row["metrics"][key], form) for key, (_, form) in LONG_COLUMNS.items()]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Best schedule: {report['best_schedule']} "
              f"(`pusa-fw generate --task rolling {' '.join(report['generate_args'])}`)", ""]
    for gate in report["gates"]:
        mark = "pass" if gate["passed"] else "MISS"
        lines.append(f"- {gate['gate']}: {_cell(gate['value'], '{:.3f}')} ({gate['rule']}) {mark}")
    return "\n".join(lines) + "\n"


def save_drift_plot(report: dict[str, Any], path: Path) -> None:
    """Metric against frame index: top, every schedule rolling the first length; bottom, the best
    schedule on every task and length (ground truth dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = report["settings"]["lengths"][0]
    best = report["best_schedule"]
    model_rows = [row for row in report["rows"] if not row.get("calibration")]
    compared = [row for row in model_rows if row["task"] == "rolling" and row["frames"] == first]
    tasks = [row for row in model_rows if row["schedule"] == best]
    truth = [row for row in report["rows"] if row["schedule"] == "ground truth"]
    figure, axes = plt.subplots(2, len(_CURVES), figsize=(6 * len(_CURVES), 8), squeeze=False)
    for line, (rows, label) in enumerate(((compared, lambda r: r["schedule"]),
                                          (tasks, lambda r: f"{r['task']} {r['frames']}"))):
        for column, (key, title) in enumerate(_CURVES):
            axis = axes[line][column]
            for row in rows + truth:
                values = [math.nan if value is None else value for value in row["curves"][key]]
                style = ":" if row.get("calibration") else "-"
                axis.plot(range(len(values)), values, style, label=label(row) if not row.get("calibration")
                          else "ground truth", linewidth=1)
            axis.set_title(title + (f" - rolling {first}" if line == 0 else f" - {best}"), fontsize=9)
            axis.set_xlabel("frame")
        axes[line][0].legend(fontsize=7)
    figure.suptitle(f"eval-toy --long: drift over frames, {report['settings']['num_seeds']} held-out seeds")
    figure.tight_layout()
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png", dpi=80)
    plt.close(figure)


def write_long_report(report: dict[str, Any], directory: Path) -> dict[str, Path]:
    """Write ``long_video.json``, ``.md`` and ``.png`` into `directory` (created if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / "long_video.json", "markdown": directory / "long_video.md",
             "plot": directory / "long_video.png"}
    atomic_write_bytes(paths["json"], json.dumps(report, indent=2, allow_nan=False).encode())
    atomic_write_bytes(paths["markdown"], long_markdown(report).encode())
    save_drift_plot(report, paths["plot"])
    return paths
