"""Every call into ComfyUI that the pack makes, in one place.

The rest of the pack is pusa-fw and torch only. Keeping ComfyUI's surface this small means the tests can
put a small stand-in for these entry points on the path (`tests/comfy_pack/standin`) and a ComfyUI update
touches one module. Everything here is imported lazily, when a node runs.

What the pack uses:
- ``comfy.model_base.WAN21``: to tell a Wan `MODEL` from any other;
- ``comfy.model_management``: the compute device, loading a `MODEL` for sampling (ComfyUI decides what is
  resident, partially loaded or offloaded) and the interrupt check;
- ``comfy.utils.ProgressBar``: the node's progress bar in the UI;
- ``comfy.patcher_extension``: the diffusion-model wrapper, registered on a clone of the `MODEL`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from pusa_fw.errors import InputError

WRAPPER_KEY = "pusa_fw"
"""Key under which the pack's diffusion-model wrapper is registered on the cloned `MODEL`."""

TEXT_TO_VIDEO_CHANNELS = 16
"""Latent channels of the Wan2.1 text-to-video DiT (the base the Pusa method fine-tunes)."""


def check_wan_t2v(model: Any) -> None:
    """Raise unless `model` is a ComfyUI `MODEL` holding a Wan2.1/2.2 text-to-video DiT (16 input channels).

    Raises:
        InputError: another architecture, or a Wan image-to-video / TI2V model (other input channels).
    """
    import comfy.model_base

    base = getattr(model, "model", None)
    if not isinstance(base, comfy.model_base.WAN21):
        kind = type(base).__name__ if base is not None else type(model).__name__
        raise InputError(
            f"Pusa Sampler needs a Wan2.1/2.2 text-to-video MODEL, got {kind}; load a Wan T2V checkpoint "
            "with the stock Load Diffusion Model node"
        )
    channels = int(base.diffusion_model.patch_embedding.weight.shape[1])
    if channels != TEXT_TO_VIDEO_CHANNELS:
        raise InputError(
            f"this Wan MODEL takes {channels} input channels (an image-to-video or TI2V model); the Pusa "
            f"method runs on the text-to-video DiT ({TEXT_TO_VIDEO_CHANNELS} channels): load Wan2.1-T2V"
        )


def compute_device() -> torch.device:
    """The device ComfyUI computes on (``--cpu`` makes it the CPU)."""
    import comfy.model_management

    return comfy.model_management.get_torch_device()


def load_for_sampling(model: Any, latent_shape: tuple[int, ...]) -> None:
    """Have ComfyUI load `model` (with its LoRA patches) for sampling latents of `latent_shape`.

    ComfyUI sizes the load from the model's own memory estimate, as its samplers do, so a card too small
    for the whole model gets a partial load with the rest streamed.

    Args:
        model: the (cloned) `MODEL`.
        latent_shape: `[B, C, F, h, w]` latents of one forward pass (B counts the guidance branches).
    """
    import comfy.model_management

    memory = model.memory_required(list(latent_shape))
    comfy.model_management.load_models_gpu([model], memory_required=memory, minimum_memory_required=memory)


def check_interrupt() -> None:
    """Raise ComfyUI's own interrupt exception when the user pressed Cancel."""
    import comfy.model_management

    comfy.model_management.throw_exception_if_processing_interrupted()


def progress_bar(total: int) -> Any:
    """ComfyUI's progress bar for the running node (``.update(1)`` per step)."""
    import comfy.utils

    return comfy.utils.ProgressBar(total)


def add_diffusion_wrapper(model: Any, wrapper: Callable[..., torch.Tensor]) -> None:
    """Register `wrapper` around the diffusion model's forward of `model` (a clone: nothing global changes).

    ComfyUI calls ``wrapper(executor, x, timestep, context, *args, **kwargs)`` in place of the forward.
    """
    import comfy.patcher_extension

    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, wrapper)


def transformer_options(model: Any) -> dict[str, Any]:
    """The transformer options of one ``apply_model`` call: the model's own, plus its wrappers and callbacks.

    This is what ComfyUI's samplers hand the model, so patches and wrappers of other nodes on the same
    `MODEL` still run.
    """
    import comfy.patcher_extension as extension

    options = extension.copy_nested_dicts(model.model_options.get("transformer_options", {}))
    extension.merge_nested_dicts(options.setdefault("wrappers", {}), model.wrappers, copy_dict1=False)
    extension.merge_nested_dicts(options.setdefault("callbacks", {}), model.callbacks, copy_dict1=False)
    return options


def latent_format(model: Any) -> Any:
    """The model's latent format (``process_in``: VAE latents -> model space; ``process_out``: back)."""
    return model.model.latent_format
