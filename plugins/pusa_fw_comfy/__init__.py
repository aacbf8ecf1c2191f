"""pusa-fw in ComfyUI: nodes that run pusa-fw plans (per-frame sigmas) on the stock Wan `MODEL`.

Drop this folder into ComfyUI's ``custom_nodes`` (with pusa-fw installed in ComfyUI's Python), or
``pip install`` it. ComfyUI finds the nodes through `comfy_entrypoint` (the V3 extension API). The node
modules import ComfyUI's API only when ComfyUI asks for them, so importing this package elsewhere is cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["comfy_entrypoint"]


async def comfy_entrypoint() -> Any:
    """The pack's `ComfyExtension` (its node list: Pusa Task, Conditioning, Sampler, Prompt Schedule, ...)."""
    from .nodes import PusaExtension

    return PusaExtension()
