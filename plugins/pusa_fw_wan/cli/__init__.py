"""The ``pusa-fw generate`` command: its config, flags and one run."""
