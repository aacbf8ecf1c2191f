"""Stand-in: the V3 node schema names the pack uses (socket types, inputs, outputs, schema, node base)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class Input:
    """A node input: its id, socket type and widget options (kept as given)."""

    def __init__(self, io_type: str, id: str, optional: bool = False, tooltip: str | None = None,
                 **options: Any) -> None:
        self.io_type, self.id, self.optional, self.tooltip, self.options = io_type, id, optional, tooltip, options

    @property
    def default(self) -> Any:
        return self.options.get("default")


class Output:
    def __init__(self, io_type: str, id: str | None = None, display_name: str | None = None,
                 tooltip: str | None = None) -> None:
        self.io_type, self.id, self.display_name, self.tooltip = io_type, id, display_name, tooltip


def _socket(io_type: str) -> type:
    class Socket:
        @staticmethod
        def Input(id: str, **options: Any) -> Input:  # noqa: N802 - ComfyUI's spelling
            return Input(io_type, id, **options)

        @staticmethod
        def Output(id: str | None = None, **options: Any) -> Output:  # noqa: N802
            return Output(io_type, id, **options)

    Socket.io_type = io_type  # type: ignore[attr-defined]
    return Socket


def Custom(io_type: str) -> type:  # noqa: N802
    return _socket(io_type)


Int, Float, String, Boolean, Combo = (_socket(name) for name in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"))
Image, Latent, Conditioning, Model, Vae = (_socket(name) for name in ("IMAGE", "LATENT", "CONDITIONING", "MODEL", "VAE"))


@dataclass
class Schema:
    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list[Input] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    description: str = ""


class NodeOutput:
    def __init__(self, *args: Any, ui: Any = None) -> None:
        self.args, self.ui = args, ui


class ComfyNode:
    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs: Any) -> NodeOutput:
        raise NotImplementedError
