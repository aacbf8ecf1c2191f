"""Stand-in: the one sampler helper the pack calls (tensors other nodes put in model options -> a device)."""

from __future__ import annotations

from typing import Any

casts: list[Any] = []
"""The (device, dtype) of every call, in order; the tests read it."""


def cast_to_load_options(model_options: dict, device: Any = None, dtype: Any = None) -> None:
    casts.append((device, dtype))
    for patch in model_options.get("to_load_options", {}).get("patches", {}).values():
        for index, item in enumerate(patch):
            if hasattr(item, "to"):
                patch[index] = item.to(device)
