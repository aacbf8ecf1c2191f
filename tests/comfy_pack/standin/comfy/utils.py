"""Stand-in: the progress bar (records its updates)."""

from __future__ import annotations

bars: list["ProgressBar"] = []


class ProgressBar:
    def __init__(self, total: int, node_id: str | None = None) -> None:
        self.total, self.current = total, 0
        bars.append(self)

    def update_absolute(self, value: int, total: int | None = None, preview: object = None) -> None:
        self.total = self.total if total is None else total
        self.current = min(self.total, value)

    def update(self, value: int) -> None:
        self.update_absolute(self.current + value)
