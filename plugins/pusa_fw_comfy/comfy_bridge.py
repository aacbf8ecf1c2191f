"""Every call into ComfyUI that the pack makes, in one place.

The rest of the pack is pusa-fw and torch only. Keeping ComfyUI's surface this small means the tests can
put a small stand-in for these entry points on the path (`tests/comfy_pack/standin`) and a ComfyUI update
touches one module. Everything here is imported lazily, when a node runs.

What the pack uses:
- ``comfy.model_base.WAN21``: to tell a Wan `MODEL` from any other (``WAN22``, TI2V-5B, is a subclass), and
  the model's ``latent_format`` (its ``latent_channels``: 16 for Wan2.1 and the Wan2.2 A14B models, 48 for
  TI2V-5B);
- the `VAE`'s ``latent_channels`` and ``downscale_index_formula`` (time, height, width): the codec geometry
  of the given latents (Wan2.1 VAE: 16 channels, /8; Wan2.2 VAE: 48 channels, /16);
- ``comfy.model_management``: the compute device, loading a `MODEL` for sampling (ComfyUI decides what is
  resident, partially loaded or offloaded), dtype sizes and the interrupt check;
- ``comfy.samplers.cast_to_load_options`` and the `ModelPatcher`'s ``pre_run`` / ``cleanup``: the part of
  ComfyUI's sampler protocol (``CFGGuider.outer_sample``) that nodes stacked on the `MODEL` rely on;
- ``latent_preview.prepare_callback``: the node's progress bar with latent previews in the UI;
- ``comfy.patcher_extension``: the diffusion-model wrapper, registered on a clone of the `MODEL`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

import torch

from pusa_fw.errors import InputError
from pusa_fw.geometry import LatentGeometry

WRAPPER_KEY = "pusa_fw"
"""Key under which the pack's diffusion-model wrapper is registered on the cloned `MODEL`."""


def model_channels(model: Any) -> int:
    """Latent channels of a ComfyUI Wan `MODEL` (its latent format's: 16 Wan2.1, 48 Wan2.2 TI2V-5B)."""
    return int(model.model.latent_format.latent_channels)


def check_wan_t2v(model: Any) -> None:
    """Raise unless `model` is a ComfyUI `MODEL` holding a Wan DiT that takes only its noisy latents.

    That is a text-to-video DiT (Wan2.1 T2V, Wan2.2 T2V A14B: 16 channels) or Wan2.2 TI2V-5B (48 channels,
    ComfyUI's ``WAN22``), whose input channels equal its latent format's. Image-to-video DiTs take extra
    channels (the image latent and a mask concatenated: 36 in, 16 latent) and are refused.

    Raises:
        InputError: another architecture, or a Wan model whose input channels are not its latent channels.
    """
    import comfy.model_base

    base = getattr(model, "model", None)
    if not isinstance(base, comfy.model_base.WAN21):
        kind = type(base).__name__ if base is not None else type(model).__name__
        raise InputError(
            f"Pusa Sampler needs a Wan text-to-video or TI2V-5B MODEL, got {kind}; load a Wan2.1/2.2 T2V or "
            "Wan2.2 TI2V-5B checkpoint with the stock Load Diffusion Model node"
        )
    channels = int(base.diffusion_model.patch_embedding.weight.shape[1])
    latent = model_channels(model)
    if channels != latent:
        raise InputError(
            f"this Wan MODEL takes {channels} input channels for {latent}-channel latents (an image-to-video "
            "model, which needs its image concatenated); the Pusa method runs on a DiT that takes only the "
            "latents: load Wan2.1-T2V (16 channels) or Wan2.2-TI2V-5B (48)"
        )


def vae_geometry(vae: Any, plan_geometry: LatentGeometry) -> LatentGeometry:
    """The codec geometry of a ComfyUI `VAE`: `plan_geometry` with the VAE's channels and spatial factor.

    Args:
        vae: a ComfyUI `VAE` (``latent_channels``; ``downscale_index_formula`` = (time, height, width) for a
            video VAE: (4, 8, 8) Wan2.1, (4, 16, 16) Wan2.2).
        plan_geometry: the frame map the plan was compiled with; its temporal stride must be the VAE's.

    Raises:
        InputError: not a video VAE, or one with another temporal stride than the plan's.
    """
    formula = getattr(vae, "downscale_index_formula", None)
    channels = getattr(vae, "latent_channels", None)
    if not isinstance(formula, (tuple, list)) or len(formula) != 3 or not isinstance(channels, int):
        raise InputError(
            f"the VAE ({type(vae).__name__}) is not a video VAE; load the Wan VAE of the model "
            "(Wan2.1_VAE for Wan2.1 / A14B, Wan2.2_VAE for TI2V-5B)"
        )
    temporal, height, width = (int(value) for value in formula)
    if temporal != plan_geometry.temporal_stride or height != width:
        raise InputError(
            f"the VAE compresses (time, height, width) by {(temporal, height, width)}; the plan's frame map "
            f"takes {plan_geometry.temporal_stride} frames per latent frame: load a Wan VAE"
        )
    values = {**plan_geometry.model_dump(), "channels": channels, "spatial_factor": height}
    return LatentGeometry.model_validate(values)


def compute_device() -> torch.device:
    """The device ComfyUI computes on (``--cpu`` makes it the CPU)."""
    import comfy.model_management

    return comfy.model_management.get_torch_device()


MODULATION_COPIES = 3
"""Per-token modulation tensors `[B, L, D]` alive at once in a Wan block when the timestep is `[B, F]`.

ComfyUI's Wan block repeats each frame's modulation to its tokens (``repeat_e``) when the frames' timesteps
differ: ``addcmul(repeat_e(e[0]), norm1(x), 1 + repeat_e(e[1]))`` holds three such tensors at once."""


def modulation_memory(model: Any, latent_shape: tuple[int, ...]) -> int:
    """Bytes of the per-token modulation of one forward with per-frame timesteps (0 for a scalar timestep).

    Args:
        model: the `MODEL`.
        latent_shape: `[B, C, F, h, w]` latents of one forward pass.

    Returns:
        ``MODULATION_COPIES * B * tokens * dim * dtype_size``, tokens ``= F * (h / 2) * (w / 2)`` for Wan's
        (1, 2, 2) patches, in the model's compute dtype (fp8 weights compute in their cast dtype).
    """
    import comfy.model_management

    base = model.model
    network = base.diffusion_model
    dim = int(network.patch_embedding.weight.shape[0])
    patch = tuple(getattr(network, "patch_size", (1, 2, 2)))
    batch, _, frames, height, width = latent_shape
    tokens = (frames // patch[0]) * (height // patch[1]) * (width // patch[2])
    dtype = getattr(base, "manual_cast_dtype", None) or base.get_dtype()
    return MODULATION_COPIES * batch * tokens * dim * int(comfy.model_management.dtype_size(dtype))


def load_for_sampling(model: Any, latent_shape: tuple[int, ...], extra_memory: int = 0) -> None:
    """Have ComfyUI load `model` (with its LoRA patches) for sampling latents of `latent_shape`.

    ComfyUI sizes the load from the model's own memory estimate, as its samplers do, so a card too small
    for the whole model gets a partial load with the rest streamed. The pack always batches its branches,
    so the estimate of the full batch is also the minimum.

    Args:
        model: the (cloned) `MODEL`.
        latent_shape: `[B, C, F, h, w]` latents of the largest forward pass (B: the batched branches, F: the
            frames of one window).
        extra_memory: bytes the model's estimate does not know about (`modulation_memory`).
    """
    import comfy.model_management

    memory = int(model.memory_required(list(latent_shape))) + int(extra_memory)
    additional = list(model.get_nested_additional_models()) if hasattr(model, "get_nested_additional_models") else []
    comfy.model_management.load_models_gpu([model, *additional], memory_required=memory,
                                           minimum_memory_required=memory)


@contextmanager
def sampling_run(model: Any) -> Iterator[None]:
    """ComfyUI's sampler protocol around a run: tensors in the model options to the GPU, ``pre_run`` (sets
    the model's current patcher, fires ON_PRE_RUN callbacks), and ``cleanup`` plus the move back in a
    ``finally``, as ``CFGGuider.sample`` / ``outer_sample`` do."""
    import comfy.samplers

    comfy.samplers.cast_to_load_options(model.model_options, device=model.load_device, dtype=model.model_dtype())
    try:
        model.pre_run()
        yield
    finally:
        model.cleanup()
        comfy.samplers.cast_to_load_options(model.model_options, device=model.offload_device)


def refuse_conditioning_hooks(conditioning: Any, name: str) -> None:
    """Raise when a `CONDITIONING` carries hooks (Create Hook LoRA, ...): the pack does not apply them.

    Raises:
        InputError: an entry of `conditioning` has ``hooks``.
    """
    for entry in conditioning if isinstance(conditioning, (list, tuple)) else []:
        options = entry[1] if isinstance(entry, (list, tuple)) and len(entry) > 1 else {}
        if isinstance(options, dict) and options.get("hooks") is not None:
            raise InputError(
                f"{name} carries conditioning hooks, which the Pusa Sampler does not apply; load LoRAs with "
                "LoraLoaderModelOnly on the MODEL instead"
            )


def check_interrupt() -> None:
    """Raise ComfyUI's own interrupt exception when the user pressed Cancel."""
    import comfy.model_management

    comfy.model_management.throw_exception_if_processing_interrupted()


def preview_callback(model: Any, steps: int) -> Callable[[int, torch.Tensor, torch.Tensor, int], None]:
    """ComfyUI's progress bar with latent previews: ``callback(step, x0, x, total_steps)`` per step."""
    import latent_preview

    return latent_preview.prepare_callback(model, steps)


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
    # The pack's wrapper goes outermost: it hands the per-frame timesteps inwards and keeps whatever comes
    # back, also from a caching wrapper that answers without calling the model.
    wrappers = options["wrappers"].get(extension.WrappersMP.DIFFUSION_MODEL, {})
    if WRAPPER_KEY in wrappers:
        ours = wrappers.pop(WRAPPER_KEY)
        options["wrappers"][extension.WrappersMP.DIFFUSION_MODEL] = {WRAPPER_KEY: ours, **wrappers}
    return options


def latent_format(model: Any) -> Any:
    """The model's latent format (``process_in``: VAE latents -> model space; ``process_out``: back)."""
    return model.model.latent_format
