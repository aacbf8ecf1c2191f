"""Stand-in: ``comfy_api.latest`` (the V3 extension API): `ComfyExtension` and the `io` module."""

from __future__ import annotations

from abc import ABC, abstractmethod

from . import io

__all__ = ["ComfyExtension", "io"]


class ComfyExtension(ABC):
    async def on_load(self) -> None:
        return None

    @abstractmethod
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        """The extension's node classes."""
