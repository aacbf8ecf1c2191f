"""`ComfyWanBackbone`: pusa-fw's `Backbone` around a stock ComfyUI Wan `MODEL`, with one sigma per frame.

ComfyUI's Wan diffusion model already embeds a timestep per latent frame (`[B, F]`, 0..1000); its samplers
just never give it one. This adapter calls the model the way ComfyUI's samplers do (``apply_model`` with
the model's transformer options, so LoRA patches, fp8 weight casting, partial loading and other nodes'
wrappers all apply) and, through a diffusion-model wrapper registered on a *clone* of the `MODEL`,
replaces the scalar timestep with the per-frame one and hands back the raw network output: the
flow-matching velocity `v = eps - x0`, which is what pusa-fw's samplers step with. Nothing global is
patched; the user's `MODEL` is left as it was.

Latents cross the boundary in the model's space (``latent_format.process_in`` of the VAE's latents, with
the model's own format: ``Wan21``, or ``Wan22`` for TI2V-5B), as pusa-fw's own Wan VAEs give them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import torch

from pusa_fw.backbone import Backbone
from pusa_fw.errors import InputError

from . import comfy_bridge

__all__ = ["ComfyWanBackbone", "TIMESTEP_SCALE"]

TIMESTEP_SCALE = 1000.0
"""Wan's network timestep is ``1000 * sigma`` (ComfyUI's flow ``model_sampling.multiplier``)."""

_TIMESTEPS = "pusa_fw_frame_timesteps"


class ComfyWanBackbone(Backbone):
    """A Wan `MODEL` from ComfyUI as a per-frame-sigma velocity model.

    Args:
        model: a ComfyUI `MODEL` (`ModelPatcher`) holding a Wan text-to-video DiT or Wan2.2 TI2V-5B (48
            latent channels, ComfyUI's ``WAN22``, called the same way); it is cloned, and the
            wrapper goes on the clone.

    Raises:
        InputError: the `MODEL` is not a Wan text-to-video or TI2V-5B model.
    """

    def __init__(self, model: Any) -> None:
        comfy_bridge.check_wan_t2v(model)
        self.model = model.clone()
        comfy_bridge.add_diffusion_wrapper(self.model, _per_frame_timesteps)
        self.latent_format = comfy_bridge.latent_format(self.model)
        self.sample_sigmas: torch.Tensor | None = None
        self.negative_context: Any = None
        self.branch_uuids = (uuid.uuid4(), uuid.uuid4())

    def start_run(self, sample_sigmas: torch.Tensor, negative_context: Any = None) -> None:
        """What ComfyUI's samplers tell the model about a run, for wrappers and patches of other nodes.

        Args:
            sample_sigmas: `[S + 1]` the run's sigmas (for a plan: the noisiest frame's at each step), as
                ``transformer_options["sample_sigmas"]``.
            negative_context: the negative text (a forward with it is ``cond_or_uncond`` 1, else 0).
        """
        self.sample_sigmas = sample_sigmas
        self.negative_context = negative_context
        self.branch_uuids = (uuid.uuid4(), uuid.uuid4())  # one per branch and run, as ComfyUI's conds get

    def to_model_space(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE latents `[B, C, F, h, w]` (as ComfyUI's VAE Encode gives them) -> the DiT's latent space."""
        return self.latent_format.process_in(latents)

    def from_model_space(self, latents: torch.Tensor) -> torch.Tensor:
        """The inverse of `to_model_space` (what ComfyUI's LATENT holds and its VAE Decode reads)."""
        return self.latent_format.process_out(latents)

    def velocity(self, latents: torch.Tensor, sigmas: torch.Tensor, context: Any) -> torch.Tensor:
        """Velocity `[B, C, F, h, w]` for latents `[B, C, F, h, w]`, sigmas `[B, F]` and text `[B, L, D]`."""
        return self.velocities(latents, sigmas, [context])[0]

    def velocities(self, latents: torch.Tensor, sigmas: torch.Tensor, contexts: Sequence[Any]) -> list[torch.Tensor]:
        """One velocity per context; branches whose text shapes agree share one batched forward pass.

        ComfyUI's own samplers batch the positive and negative branch the same way.
        """
        if not contexts:
            return []
        if any(context is None for context in contexts):
            raise InputError("the Wan MODEL needs text conditioning: connect a CONDITIONING to positive")
        batch = latents.shape[0]
        if len({tuple(context.shape) for context in contexts}) == 1 and len(contexts) > 1:
            stacked = self._forward(
                latents.repeat(len(contexts), 1, 1, 1, 1), sigmas.repeat(len(contexts), 1), torch.cat(list(contexts)),
                [self._branch(context) for context in contexts],
            )
            return list(stacked.split(batch))
        return [self._forward(latents, sigmas, context, [self._branch(context)]) for context in contexts]

    def _branch(self, context: Any) -> int:
        """ComfyUI's ``cond_or_uncond`` of a context: 1 for the negative text, else 0 (the history branch too)."""
        return 1 if self.negative_context is not None and context is self.negative_context else 0

    def _forward(self, latents: torch.Tensor, sigmas: torch.Tensor, context: torch.Tensor,
                 branches: list[int]) -> torch.Tensor:
        if sigmas.shape != (latents.shape[0], latents.shape[2]):
            raise InputError(
                f"sigmas must be [B, F] = {[latents.shape[0], latents.shape[2]]}, got {list(sigmas.shape)}"
            )
        # 1000 * sigma in float64 (plans keep exact levels), then float32 like ComfyUI's own timesteps.
        timesteps = (sigmas.double() * TIMESTEP_SCALE).to(torch.float32)
        if bool((sigmas == sigmas[:, :1]).all()):
            # Every frame at one sigma (t2v, or no frame held at this step): hand ComfyUI a [B] timestep. Its
            # Wan model then broadcasts the time modulation; a [B, F] one is repeated to every token (6
            # repeat_interleave per block), which made t2v slower than the stock KSampler.
            timesteps = timesteps[:, 0]
        # The scalar sigma ComfyUI's bookkeeping sees (its denoised output is discarded): the noisiest frame.
        scalar = sigmas.amax(dim=1).to(torch.float32)
        options = comfy_bridge.transformer_options(self.model)
        options[_TIMESTEPS] = timesteps
        options["sigmas"] = scalar
        options["cond_or_uncond"] = list(branches)
        options["uuids"] = [self.branch_uuids[branch] for branch in branches]
        if self.sample_sigmas is not None:
            options["sample_sigmas"] = self.sample_sigmas
        if hasattr(self.model, "prepare_state"):
            self.model.prepare_state(scalar)  # ComfyUI's samplers fire ON_PREPARE_STATE before every forward
        captured: dict[str, torch.Tensor] = {}
        options["pusa_fw_output"] = captured
        self.model.model.apply_model(latents, scalar.to(latents.device), c_crossattn=context,
                                     transformer_options=options)
        return captured["velocity"].to(torch.float32)


def _per_frame_timesteps(executor: Any, x: torch.Tensor, timestep: torch.Tensor, context: Any, *args: Any,
                         **kwargs: Any) -> torch.Tensor:
    """The diffusion-model wrapper: swap in the per-frame timesteps, keep the raw output (the velocity)."""
    options = kwargs.get("transformer_options")
    if options is None:
        options = next((arg for arg in args if isinstance(arg, dict) and _TIMESTEPS in arg), None)
    if options is None or _TIMESTEPS not in options:
        return executor(x, timestep, context, *args, **kwargs)
    frame_timesteps = options[_TIMESTEPS].to(device=timestep.device, dtype=timestep.dtype)
    output = executor(x, frame_timesteps, context, *args, **kwargs)
    options["pusa_fw_output"]["velocity"] = output
    return output
