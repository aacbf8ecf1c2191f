"""`make demo`: compile the i2v, keyframes and rolling plans, print them and draw them into a folder.

    python -m pusa_fw.demo outputs
"""

from __future__ import annotations

import sys
from pathlib import Path

from .registry_lookup import lookup

DEMO_PLANS = [
    ("i2v", {"strength": 0.8}, 81, 10),
    ("keyframes", {"positions": [0, 40, 80], "strengths": [1.0, 0.6, 0.8]}, 81, 10),
    ("rolling", {"window": 81, "overlap": 17, "schedule": "pyramid",
                 "schedule_params": {"ar_step": 2, "causal_block_size": 3}}, 161, 6),
]


def main(argv: list[str] | None = None) -> int:
    """Write `<name>.txt` tables and `<name>.png` heatmaps into the folder given (default ``outputs``)."""
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0] if args else "outputs")
    folder.mkdir(parents=True, exist_ok=True)
    for name, params, num_frames, steps in DEMO_PLANS:
        plan = lookup("tasks", name)(**params).plan(num_frames=num_frames, steps=steps)
        table = plan.table()
        print(table, end="\n\n")
        (folder / f"plan_{name}.txt").write_text(table + "\n")
        plan.save_heatmap(folder / f"plan_{name}.png")
        print(f"wrote {folder / f'plan_{name}.png'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
