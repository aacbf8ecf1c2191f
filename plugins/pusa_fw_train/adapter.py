"""`TrainAdapter`: what the trainer needs to know about a backbone, registered by the backbone's plugin.

The trainer knows no backbone. A plugin that ships a backbone (Wan, or a third-party LTX or HunyuanVideo
DiT) registers one adapter per backbone name through the ``register_train_adapters`` hook, and a run names
it in ``model.backbone``. The adapter answers six questions:

- ``build_model(path, architecture, init_seed)``: the model, fp32 on the CPU, from a checkpoint or a random
  init. An adapter that also takes the keywords ``weights_dtype`` (a name of
  `pusa_fw_train.memory_options.WeightsDtype`) and ``device`` stores the large frozen weights in that dtype
  and puts them on that device as it loads them (see `pusa_fw_train.memory.build_base`). The model is an
  ``nn.Module`` called as ``model(x_sigma [B, C, F, H, W], sigmas [B, F], context)`` returning the
  velocity `[B, C, F, H, W]` (the same forward as inference, so DDP/FSDP2 can wrap it). An adapter that
  takes the keyword ``init`` builds an architecture with ``init="default"`` in its layers' own
  initialisation drawn after ``torch.manual_seed(init_seed)`` (a start from scratch, e.g. a toy model)
  instead of its random one.
- ``default_lora_targets``: Linear-module name suffixes LoRA adapts when ``lora.targets`` is not given.
- ``shard(model, mesh, **options)``: FSDP2 ``fully_shard`` of the model's blocks and root over ``mesh``.
- ``codec(model_path)``: the codec (``decode``, ``geometry``) renders decode with; ``geometry(model_path)``
  the latent geometry validation plans are built for; ``text_encoder(model_path)`` the real text encoder
  that encodes the sample prompts of renders (``encode(prompts) -> [B, L, D]``).
- ``collate_context(contexts)``: stack the text contexts of one batch (e.g. zero-pad `[L, D]` to the longest).
- ``tokens_per_sample(latents_shape)``: transformer tokens of one sample `[C, F, H, W]` (for throughput).
- ``read_lora(path)`` and ``export_lora(checkpoint, out, **options)``: LoRA files of the backbone's own key
  layout (continuing from one; exporting a checkpoint for its users' tools).

Optional: ``check_latents(latents_shape, model_path)`` refuses training data the model cannot take (the
trainer calls it with the first sample's `[C, F, H, W]` before any weights are read).
``load_shards(model, path, architecture, init_seed, *, weights_dtype)`` lets an FSDP2 run build
shard-only (`pusa_fw_train.sharded_build`, used when ``distributed = "fsdp"`` runs on several ranks without
``block_swap`` and ``build_model`` takes a ``device`` keyword). The trainer then calls
``build_model(path, architecture, init_seed, device="meta"[, weights_dtype=...])`` for the structure only
(no weight read), injects the LoRA (its factors drawn on the CPU as in one process) or unfreezes the model,
calls ``shard(model, mesh, reshard_after_forward=True, ...)`` and ``model.to_empty(device=...)``, and then
``load_shards`` with the run's ``model.path``, ``model.architecture``, ``model.init_seed`` and resolved
``weights_dtype`` name. It must fill every local shard of the base (a peft-wrapped target through its
``base_layer``; each rank reads only the rows of its own shards, FSDP2 shards dim 0) with exactly the values
``build_model`` on a device would give them (the checkpoint converted to ``weights_dtype``, or the seeded
random init), must run no collective, and returns a report (e.g. bytes read and kept on this rank) that the
trainer keeps as its load report; the trainer copies the LoRA factors in afterwards. An adapter without
``load_shards`` loads the whole model on every rank and shards it after.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from pusa_fw.errors import InputError
from pusa_fw.geometry import LatentGeometry

__all__ = ["LoraPair", "TrainAdapter", "get_train_adapter", "registered_adapters"]

LoraPair = tuple[torch.Tensor, torch.Tensor, float]
"""One module of a LoRA file: ``(down [r, in], up [out, r], scale)``; the delta is ``scale * up @ down``."""


@runtime_checkable
class TrainAdapter(Protocol):
    """A backbone's answers to the trainer (see the module docstring)."""

    name: str
    default_lora_targets: tuple[str, ...]

    def build_model(self, path: str | None, architecture: dict[str, Any] | None, init_seed: int) -> nn.Module:
        """The model in fp32 on the CPU: loaded from `path`, or `architecture` seeded by `init_seed`."""
        ...

    def shard(self, model: nn.Module, mesh: Any, **options: Any) -> nn.Module:
        """FSDP2-shard `model` over `mesh` (options: param_dtype, reduce_dtype, reshard_after_forward)."""
        ...

    def codec(self, model_path: str | None) -> Any:
        """The codec that decodes this backbone's latents (raise `InputError` when there is none)."""
        ...

    def geometry(self, model_path: str | None) -> LatentGeometry:
        """The latent geometry of the model's codec."""
        ...

    def text_encoder(self, model_path: str | None) -> Any:
        """The model's text encoder, with ``encode(list[str]) -> [B, L, D]`` (raise `InputError` if none)."""
        ...

    def collate_context(self, contexts: Sequence[torch.Tensor]) -> torch.Tensor:
        """One batch's text contexts, stacked (`[B, ...]`)."""
        ...

    def tokens_per_sample(self, latents_shape: Sequence[int]) -> int:
        """Transformer tokens of one sample of latents shape `[C, F, H, W]`."""
        ...

    def read_lora(self, path: str) -> dict[str, LoraPair]:
        """The LoRA pairs of a file in any layout this backbone reads, by module path."""
        ...

    def export_lora(self, checkpoint: Path, out: Path, **options: Any) -> Path:
        """Export a training checkpoint's LoRA to one file in the backbone's users' key layout."""
        ...


def registered_adapters() -> list[str]:
    """Backbone names a run may give as ``model.backbone``."""
    from pusa_fw.plugins import get_registry

    return get_registry().names("train_adapters")


def get_train_adapter(backbone: str) -> TrainAdapter:
    """The adapter registered for `backbone`.

    Raises:
        InputError: no plugin registered a training adapter of that name.
    """
    from pusa_fw.plugins import get_registry

    registry = get_registry()
    if ("train_adapters", backbone) not in registry:
        raise InputError(
            f"model.backbone {backbone!r} has no training adapter; use one of {registered_adapters()} or "
            "install the plugin that registers it (hook register_train_adapters)"
        )
    adapter = registry.get("train_adapters", backbone)
    return adapter() if isinstance(adapter, type) else adapter
