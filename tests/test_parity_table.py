"""`benchmarks/parity_table.py` prints the parity table of the results page: every row at the fp32 floor."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_parity_table_runs_and_every_row_is_at_the_fp32_floor() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "parity_table.py"), "--json"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, check=True)
    rows = json.loads(result.stdout)
    assert len(rows) == 8 and any(name.startswith("VAE") for name in rows)
    assert all(0 <= value <= 5e-6 for value in rows.values()), rows
