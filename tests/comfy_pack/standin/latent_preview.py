"""Stand-in: ComfyUI's latent preview callback (a progress bar updated with a preview of x0 per step)."""

from __future__ import annotations

from typing import Any, Callable

import comfy.utils

previews: list[tuple[int, int, tuple[int, ...]]] = []
"""(step + 1, total, shape of x0) per callback; the tests read it."""


def prepare_callback(model: Any, steps: int, x0_output_dict: dict | None = None) -> Callable[..., None]:
    bar = comfy.utils.ProgressBar(steps)

    def callback(step: int, x0: Any, x: Any, total_steps: int) -> None:
        previews.append((step + 1, total_steps, tuple(x0.shape)))
        bar.update_absolute(step + 1, total_steps, None)

    return callback
