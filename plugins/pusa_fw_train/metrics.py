"""Training metrics: a JSONL file always, TensorBoard too when it is installed. Never prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["MetricsLog", "device_synchronize", "sigma_bin_losses"]

import torch


def device_synchronize(device: torch.device) -> None:
    """Wait for the work queued on a CUDA `device` (so a wall-clock step time is the step's); CPU: no-op."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sigma_bin_losses(
    sigmas: torch.Tensor, losses: torch.Tensor, mask: torch.Tensor, bins: int
) -> dict[str, float]:
    """Mean per-frame loss per equal-width sigma bin over the counted frames (``"sigma_0.00-0.20"``...)."""
    sigmas, losses, mask = sigmas.detach().cpu().double(), losses.detach().cpu().double(), mask.detach().cpu()
    index = (sigmas * bins).long().clamp(max=bins - 1)[mask]
    sums = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, losses[mask])
    counts = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, torch.ones_like(losses[mask]))
    return {
        f"sigma_{b / bins:.2f}-{(b + 1) / bins:.2f}": float(sums[b] / counts[b])
        for b in range(bins)
        if counts[b] > 0
    }


class MetricsLog:
    """Appends one JSON object per record to ``<run>/log.jsonl``; mirrors scalars to TensorBoard if available.

    Args:
        run_dir: the run directory.
        tensorboard: also write TensorBoard event files under ``<run>/tensorboard`` when installed.
    """

    def __init__(self, run_dir: Path, *, tensorboard: bool = True) -> None:
        self.path = run_dir / "log.jsonl"
        self._writer: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self._writer = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        """Append `record` (must contain ``step``)."""
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        if self._writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
