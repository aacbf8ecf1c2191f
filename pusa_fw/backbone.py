"""The `Backbone` interface: a velocity predictor with one sigma per latent frame.

A backbone knows nothing about tasks, schedules or conditioning. It is handed the latents of the frames
in the current window, one sigma per frame, and an opaque context (text embeddings for Wan; whatever a
test backbone needs), and returns the flow-matching velocity `v = eps - x0`.

Plugins register backbone *factories* (`BackboneFactory`: ``name`` and ``load``) through the
``register_backbones`` hook. A factory may offer more than loading, as optional methods that any backbone's
factory can implement (`BACKBONE_CAPABILITIES`); `backbone_factory` returns a registered factory checked to
have the ones a caller needs, so other plugins reach a backbone through the registry alone.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["BACKBONE_CAPABILITIES", "Backbone", "BackboneFactory", "FrameMemory", "LoraFile", "PartialBackbone",
           "backbone_factory", "supports_partial"]

LoraFile = tuple[str | os.PathLike[str], float]
"""One LoRA file to apply and its strength (1.0 = the file as trained): ``(path, strength)``."""

BACKBONE_CAPABILITIES: dict[str, str] = {
    "save": "save(model, directory) -> Path: write the model into `directory` (created if missing) in the "
            "checkpoint layout `load` reads back; returns the directory",
    "apply_loras": "apply_loras(model, loras: Sequence[LoraFile], *, merge=False) -> report: apply LoRA "
                   "files to a loaded model, each `(path, strength)`; `merge` folds them into the base weights",
}
"""Optional methods of a `BackboneFactory`, by name, with what each does."""


class Backbone(ABC):
    """A per-frame-timestep velocity model.

    Implementations convert sigma to their own network timestep internally (Wan: `1000 * sigma`); no
    other code in pusa-fw does that conversion.
    """

    @abstractmethod
    def velocity(self, latents: torch.Tensor, sigmas: torch.Tensor, context: Any) -> torch.Tensor:
        """Predict the velocity.

        Args:
            latents: `[B, C, F, H, W]` noisy latents of the frames in the window.
            sigmas: `[B, F]` noise level of each frame, in [0, 1] (1 = pure noise); float64 from the
                sampling loop (plans keep their levels exact), so cast with care (`1000 * sigma` in float64).
            context: conditioning the model understands (e.g. text embeddings `[B, L, D]`), or None.

        Returns:
            `[B, C, F, H, W]` velocity `eps - x0`, same dtype and device as `latents`.
        """

    def velocities(
        self, latents: torch.Tensor, sigmas: torch.Tensor, contexts: Sequence[Any]
    ) -> list[torch.Tensor]:
        """The velocity under each of several contexts (the guidance branches), same latents and sigmas.

        The default calls `velocity` once per context, in order; a parallel backbone may evaluate the
        branches on different devices at once (CFG parallel).

        Returns:
            One `[B, C, F, H, W]` velocity per context, in the order of ``contexts``.
        """
        return [self.velocity(latents, sigmas, context) for context in contexts]

    def __call__(self, latents: torch.Tensor, sigmas: torch.Tensor, context: Any = None) -> torch.Tensor:
        return self.velocity(latents, sigmas, context)


class FrameMemory:
    """What a partial backbone keeps between calls for one (sample, guidance branch): opaque to everyone else.

    For Wan it is e.g. every block's keys and values of every frame from that frame's last computation. The
    caller only stores it and hands it back (`PartialBackbone.velocity_partial`); a backbone may use any
    type, this class only names the role.
    """


@runtime_checkable
class PartialBackbone(Protocol):
    """Optional capability: compute the velocity of only some frames of the window.

    A backbone declares it by having the method (`supports_partial`). The saved work must be real: the
    skipped frames' tokens go through no block; they take part in self-attention through their keys and
    values cached from their last computation (per block), so the computed frames still attend to every
    frame of the window.
    """

    def velocity_partial(
        self,
        latents: torch.Tensor,
        sigmas: torch.Tensor,
        context: Any,
        *,
        compute: torch.Tensor,
        memory: Any | None,
    ) -> tuple[torch.Tensor, Any]:
        """The velocity of the frames in `compute`, and the new memory.

        Args:
            latents: `[B, C, F, H, W]` the whole window (the skipped frames' values are ignored).
            sigmas: `[B, F]` float64 levels.
            context: as for `Backbone.velocity`.
            compute: `[F]` bool, the frames whose velocity is wanted now (at least one True).
            memory: what the previous call returned for this (sample, guidance branch), or None. None
                requires ``compute.all()`` (nothing is cached yet); otherwise an `InputError` in one line.
                A call with ``compute`` all True refreshes everything and returns a fresh memory.

        Returns:
            `[B, C, Fc, H, W]` velocity of the computed frames in window order (Fc = ``compute.sum()``),
            and the new memory (a `FrameMemory` or any object the backbone understands).
        """
        ...


def supports_partial(backbone: Any) -> bool:
    """Whether `backbone` offers `PartialBackbone.velocity_partial`."""
    return callable(getattr(backbone, "velocity_partial", None))


@runtime_checkable
class BackboneFactory(Protocol):
    """What ``register_backbones`` registers: loads a backbone by name (see `BACKBONE_CAPABILITIES` for the
    optional methods a factory may add)."""

    name: str

    def load(self, *args: Any, **kwargs: Any) -> Any:
        """The backbone (an ``nn.Module`` `Backbone`) from a checkpoint (``dtype``, ``device``, ...)."""
        ...


def backbone_factory(name: str, *, needs: Sequence[str] = ()) -> Any:
    """The registered factory of backbone `name`, checked to offer the optional methods `needs`.

    Example: ``backbone_factory("wan2.1-t2v", needs=["apply_loras"]).apply_loras(model, [(path, 1.0)])``.

    Args:
        name: a registered backbone (``pusa-fw plugins`` lists them).
        needs: names from `BACKBONE_CAPABILITIES` the caller will use.

    Raises:
        UnknownComponentError: no backbone is registered under `name`.
        InputError: `needs` names an unknown capability, or the factory lacks one (names the plugin).
    """
    from .errors import InputError
    from .plugins import get_registry

    unknown = sorted(set(needs) - set(BACKBONE_CAPABILITIES))
    if unknown:
        raise InputError(
            f"unknown backbone capabilities {unknown}; choose from {sorted(BACKBONE_CAPABILITIES)}"
        )
    entry = get_registry().entry("backbones", name)
    missing = [need for need in needs if not callable(getattr(entry.component, need, None))]
    if missing:
        wanted = "; ".join(BACKBONE_CAPABILITIES[need] for need in missing)
        raise InputError(
            f"backbone {name!r} (plugin {entry.plugin!r}) has no {', '.join(missing)}; its factory must "
            f"implement {wanted}, or use a backbone that does"
        )
    return entry.component
