"""One markdown table of the t2v gate metrics of several eval-toy reports (sampler sweeps, ablations).

    python -m pusa_fw_toy.gate_table NAME=DIR [NAME=DIR ...]

Each ``DIR`` holds an ``eval_toy.json`` with a t2v ``base`` row (``eval-toy --task t2v``). A row of the
table gives the four gate metrics, the share of videos slower than a quarter of the truth's speed
(`pusa_fw_toy.report.STILL`: they count as the wrong direction), the direction among the moving ones, and
the per-video speed histogram.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from pusa_fw.errors import InputError

from pusa_fw_toy.report import speed_histogram, still_share

__all__ = ["gate_row", "gate_table", "main"]


def gate_row(report: dict[str, Any]) -> dict[str, Any]:
    """The t2v base row of `report` as gate metrics plus the still share and direction among moving videos.

    Raises:
        InputError: the report has no t2v base row, or it predates per-video speeds.
    """
    row = next((row for row in report["rows"] if row["task"] == "t2v" and row["method"] == "base"), None)
    if row is None or "speed_ratios" not in row:
        raise InputError("the report has no t2v base row with per-video speeds; rerun eval-toy --task t2v")
    ratios = [ratio for model in row["speed_ratios"] for ratio in model]
    still = still_share(ratios)
    metrics = {name: row["metrics"][name]["mean"] for name in
               ("valid", "fit_within_1px", "speed_ratio", "direction_acc")}
    moving = 1 - still
    # direction_acc counts a still video as wrong, so the share right among the moving ones is acc / moving
    metrics["direction_of_moving"] = metrics["direction_acc"] / moving if moving > 0 else float("nan")
    return {**metrics, "still": still, "histogram": speed_histogram(ratios), "videos": len(ratios)}


def _number(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def gate_table(named: list[tuple[str, dict[str, Any]]]) -> str:
    """Markdown: one `gate_row` per ``(name, report)``."""
    header = ("| run | valid | fit <= 1 px | speed / truth | direction | still (< 0.25) | direction of moving "
              "| speed histogram (0.1 bins, 0-2) |")
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for name, report in named:
        row = gate_row(report)
        cells = [row["valid"], row["fit_within_1px"], row["speed_ratio"], row["direction_acc"], row["still"],
                 row["direction_of_moving"]]
        lines.append(f"| {name} | " + " | ".join(_number(cell) for cell in cells)
                     + f" | {' '.join(str(count) for count in row['histogram'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the table of ``NAME=DIR`` arguments; exit 2 with one line on a bad argument."""
    named = []
    try:
        for argument in argv if argv is not None else sys.argv[1:]:
            name, separator, folder = argument.partition("=")
            path = Path(folder) / "eval_toy.json"
            if not separator or not path.is_file():
                raise InputError(f"{argument!r} is not NAME=DIR with DIR/eval_toy.json; run eval-toy --out DIR first")
            named.append((name, json.loads(path.read_text())))
        if not named:
            raise InputError("name at least one NAME=DIR")
        sys.stdout.write(gate_table(named))
    except InputError as error:
        sys.stderr.write(f"gate_table: {error}\n")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
