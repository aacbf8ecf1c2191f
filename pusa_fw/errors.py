"""Error types of pusa-fw.

Every error says which value is wrong and how to fix it. All of them derive from `PusaError`, so a
command-line front end can catch one type and print a one-line message.
"""

from __future__ import annotations


class PusaError(Exception):
    """Base class of every error raised on purpose by pusa-fw."""


class PlanError(PusaError, ValueError):
    """A plan (or a grid a plan is built from) breaks an invariant; the message names step and frame."""


class FrameMapError(PusaError, ValueError):
    """A pixel-frame count or position does not fit the Wan-VAE frame map."""


class PluginError(PusaError):
    """A plugin could not be loaded, or two plugins registered the same name."""


class DuplicateComponentError(PluginError):
    """Two plugins registered a component under the same name."""


class UnknownComponentError(PusaError, KeyError):
    """A name was looked up that no loaded plugin registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(PusaError):
    """A checkpoint or LoRA file is missing, unreadable, or does not fit the model."""


class InputError(PusaError, ValueError):
    """A user-provided input (file, size, frame count) is not usable."""
