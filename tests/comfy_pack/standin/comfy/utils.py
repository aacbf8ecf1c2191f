"""Stand-in: the progress bar (records its updates)."""

from __future__ import annotations

bars: list["ProgressBar"] = []


class ProgressBar:
    def __init__(self, total: int, node_id: str | None = None) -> None:
        self.total, self.current = total, 0
        bars.append(self)

    def update(self, value: int) -> None:
        self.current = min(self.total, self.current + value)
