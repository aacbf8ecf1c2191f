"""``python -m pusa_fw``: the ``pusa-fw`` command line, e.g. under ``torchrun ... -m pusa_fw generate``."""

from __future__ import annotations

import sys

from pusa_fw.cli import main

if __name__ == "__main__":
    sys.exit(main())
