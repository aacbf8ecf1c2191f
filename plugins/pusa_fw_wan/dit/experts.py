"""`WanExpertsBackbone`: Wan2.2 A14B, two experts (high noise, low noise) switched by sigma.

Wan2.2-T2V-A14B and I2V-A14B denoise the early, noisy steps with a high-noise expert and the rest with a
low-noise expert, both Wan2.1-14B-shaped DiTs (`wan_reference.md` §8). The official rule uses the scalar
timestep: the high-noise expert while `t >= boundary * 1000` (boundary 0.875 for T2V, 0.9 for I2V); Pusa
compares the same global scalar (`pusa_reference.md` §2.4).

**Expert choice with per-frame sigmas.** A step's global noise level is the largest sigma over the
frames of the window, `level = max_f sigmas[b, f]`, and sample b goes to the high-noise expert iff
`level >= boundary` (so exactly at the boundary it is the high-noise expert, as in Wan and Pusa; the
comparison runs in the dtype of the sigmas, with the boundary rounded to it). Frames
held as conditioning carry a sigma at or below that of the frames being generated (clean 0, or Pusa's
`m * sigma`), so the maximum is the level of the generated frames: this is Pusa's global-timestep rule
expressed on sigmas, and the whole window (conditioning frames included) goes through one expert.
Samples of one batch at different levels are split between the experts and put back in order.

Roles are explicit keyword arguments (or explicit directories in `from_pretrained`); nothing depends on
load order or on substrings of paths.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pusa_fw.backbone import Backbone
from pusa_fw.errors import InputError

from pusa_fw_wan.lora.apply import LoraReport, LoraSpec, apply_loras

__all__ = ["WAN22_I2V_BOUNDARY", "WAN22_T2V_BOUNDARY", "WanExpertsBackbone"]

WAN22_T2V_BOUNDARY = 0.875
WAN22_I2V_BOUNDARY = 0.9


class WanExpertsBackbone(nn.Module, Backbone):
    """Two velocity experts switched by the step's sigma (Wan2.2 A14B).

    Calling the module is the same as `velocity`. When the experts are `nn.Module`s they are registered
    as submodules `high_noise` and `low_noise`, so `.to()`, `.eval()` and `state_dict()` reach both.

    Args:
        high_noise: the expert for noisy steps (`level >= boundary`).
        low_noise: the expert for the remaining steps.
        boundary: sigma at which the high-noise expert takes over, in [0, 1]; 0.875 for Wan2.2 T2V
            (`WAN22_T2V_BOUNDARY`), 0.9 for I2V (`WAN22_I2V_BOUNDARY`).
        offload_device: if set, the expert not in use is moved there (e.g. "cpu") and the one in use to
            the device of the latents, before each call that needs it; None keeps both where they are.
    """

    def __init__(
        self,
        *,
        high_noise: Backbone,
        low_noise: Backbone,
        boundary: float = WAN22_T2V_BOUNDARY,
        offload_device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        for role, expert in (("high_noise", high_noise), ("low_noise", low_noise)):
            if not isinstance(expert, Backbone):
                raise InputError(f"{role} must be a Backbone (e.g. a WanDiT), got {type(expert).__name__}")
        if high_noise is low_noise:
            raise InputError("high_noise and low_noise are the same object; pass the two experts separately")
        if (
            isinstance(boundary, bool)
            or not isinstance(boundary, (int, float))
            or not math.isfinite(boundary)
            or not 0.0 <= boundary <= 1.0
        ):
            raise InputError(
                f"boundary={boundary!r} must be a sigma in [0, 1] (Wan2.2: {WAN22_T2V_BOUNDARY} for T2V, "
                f"{WAN22_I2V_BOUNDARY} for I2V); a Wan timestep such as 875 is 0.875 here"
            )
        self.high_noise = high_noise
        self.low_noise = low_noise
        self.boundary = float(boundary)
        self.offload_device = None if offload_device is None else torch.device(offload_device)
        self.lora_reports: dict[str, LoraReport] = {}

    @classmethod
    def from_pretrained(
        cls,
        high_dir: str | os.PathLike[str],
        low_dir: str | os.PathLike[str],
        high_loras: Sequence[LoraSpec] = (),
        low_loras: Sequence[LoraSpec] = (),
        boundary: float = WAN22_T2V_BOUNDARY,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        merge_loras: bool = False,
        offload_device: torch.device | str | None = None,
        weights_dtype: str | torch.dtype | None = None,
    ) -> WanExpertsBackbone:
        """Load both experts, each from its own checkpoint and with its own LoRAs.

        Args:
            high_dir: high-noise expert checkpoint (e.g. `Wan2.2-T2V-A14B/high_noise_model`).
            low_dir: low-noise expert checkpoint (e.g. `Wan2.2-T2V-A14B/low_noise_model`).
            high_loras: LoRAs for the high-noise expert only (e.g. Pusa's `high_noise_pusa.safetensors`).
            low_loras: LoRAs for the low-noise expert only.
            boundary: see the class.
            dtype: compute dtype of both experts (see `WanDiT.from_pretrained`).
            device: where the weights go.
            merge_loras: fold the LoRAs into the weights (see `pusa_fw_wan.lora.merge_loras`).
            offload_device: see the class.
            weights_dtype: storage dtype of both experts' large linears (see `WanDiT.from_pretrained`).

        Returns:
            The backbone; `lora_reports["high_noise"]` / `["low_noise"]` say what each LoRA set did.
        """
        from pusa_fw_wan.dit.model import WanDiT

        if Path(high_dir).resolve() == Path(low_dir).resolve():
            raise InputError(
                f"high_dir and low_dir are both {str(high_dir)!r}; give each expert its own checkpoint"
            )
        experts: dict[str, Backbone] = {}
        reports: dict[str, LoraReport] = {}
        for role, directory, specs in (
            ("high_noise", high_dir, high_loras),
            ("low_noise", low_dir, low_loras),
        ):
            model = WanDiT.from_pretrained(directory, dtype=dtype, device=device, weights_dtype=weights_dtype)
            if specs:
                reports[role] = apply_loras(model, list(specs), merge=merge_loras)
            experts[role] = model
        backbone = cls(
            high_noise=experts["high_noise"],
            low_noise=experts["low_noise"],
            boundary=boundary,
            offload_device=offload_device,
        )
        backbone.lora_reports = reports
        return backbone

    def uses_high_noise(self, sigmas: torch.Tensor) -> torch.Tensor:
        """Which samples the high-noise expert handles.

        Args:
            sigmas: `[B, F]` per-frame sigmas (or `[B]`).

        Returns:
            `[B]` bool, True where `max_f sigmas[b, f] >= boundary`. The comparison is made in the dtype of
            `sigmas` with the boundary rounded to that dtype, so a float32 sigma of 0.9 counts as being
            at a boundary of 0.9 (in float64 the float32 value 0.9 is slightly below 0.9).
        """
        if not isinstance(sigmas, torch.Tensor) or sigmas.dim() not in (1, 2) or sigmas.numel() == 0:
            shape = list(sigmas.shape) if isinstance(sigmas, torch.Tensor) else type(sigmas).__name__
            raise InputError(f"sigmas must be a non-empty [B, F] (or [B]) tensor, got {shape}")
        if not sigmas.is_floating_point():
            raise InputError(f"sigmas must be a floating-point tensor, got dtype {sigmas.dtype}")
        levels = sigmas.detach()
        if levels.dim() == 2:
            levels = levels.amax(dim=1)
        return levels >= torch.tensor(self.boundary, dtype=levels.dtype, device=levels.device)

    def _prepare(self, active: Backbone, idle: Backbone, device: torch.device) -> None:
        if self.offload_device is None:
            return
        if isinstance(idle, nn.Module):
            idle.to(self.offload_device)
        if isinstance(active, nn.Module):
            active.to(device)

    def velocity(self, latents: torch.Tensor, sigmas: torch.Tensor, context: Any) -> torch.Tensor:
        """Predict the velocity with the expert each sample's level selects.

        Args:
            latents: `[B, C, F, H, W]`.
            sigmas: `[B, F]` per-frame sigmas in [0, 1].
            context: `[B, L, D]` text features (split with the batch when samples go to different experts),
                or anything the experts accept when the whole batch goes to one expert.

        Returns:
            `[B, C_out, F, H, W]` velocity from the selected expert(s).
        """
        high = self.uses_high_noise(sigmas)
        if high.shape[0] != latents.shape[0]:
            raise InputError(
                f"sigmas has batch {high.shape[0]} but latents {list(latents.shape)} has {latents.shape[0]}"
            )
        if bool(high.all()) or not bool(high.any()):
            active, idle = (
                (self.high_noise, self.low_noise) if bool(high.all()) else (self.low_noise, self.high_noise)
            )
            self._prepare(active, idle, latents.device)
            return active.velocity(latents, sigmas, context)
        if not isinstance(context, torch.Tensor) or context.shape[0] != latents.shape[0]:
            raise InputError(
                "the samples of this batch are at noise levels on both sides of the expert boundary, "
                "so the batch "
                f"must be split, which needs a [B, L, D] context tensor; got {type(context).__name__}. "
                "Run samples at different levels in separate calls"
            )
        output: torch.Tensor | None = None
        for expert, idle, rows in (
            (self.high_noise, self.low_noise, high),
            (self.low_noise, self.high_noise, ~high),
        ):
            index = rows.nonzero().squeeze(1).to(latents.device)
            self._prepare(expert, idle, latents.device)
            part = expert.velocity(
                latents[index], sigmas[index.to(sigmas.device)], context[index.to(context.device)]
            )
            if output is None:
                output = part.new_empty((latents.shape[0], *part.shape[1:]))
            output[index] = part
        assert output is not None
        return output

    def forward(self, latents: torch.Tensor, sigmas: torch.Tensor, context: Any = None) -> torch.Tensor:
        """Same as `velocity`."""
        return self.velocity(latents, sigmas, context)
