"""Stand-in: ComfyUI's base model flow for Wan (`apply_model` -> wrappers -> diffusion model -> denoised)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import patcher_extension
from .latent_formats import Wan21, Wan22

PREFIX = "model.diffusion_model."


class WanModel(nn.Module):
    """The diffusion model: ``forward(x, timestep, context, ..., transformer_options)`` on 0..1000 timesteps."""

    def __init__(self, state_dict: dict[str, torch.Tensor], head_dim: int = 128) -> None:
        super().__init__()
        from pusa_fw_wan.dit.key_mapping import infer_config
        from pusa_fw_wan.dit.model import WanDiT

        official = {key.removeprefix(PREFIX): value for key, value in state_dict.items()}
        config = infer_config({key: tuple(value.shape) for key, value in official.items()}, head_dim=head_dim)
        self.inner = WanDiT(config)
        self.inner.load_state_dict(official)
        self.inner.eval()
        self.patch_embedding = self.inner.patch_embedding

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, clip_fea: Any = None,
                time_dim_concat: Any = None, transformer_options: dict | None = None, **kwargs: Any) -> torch.Tensor:
        options = transformer_options or {}
        wrappers = patcher_extension.get_all_wrappers(patcher_extension.WrappersMP.DIFFUSION_MODEL, options)
        return patcher_extension.WrapperExecutor.new_class_executor(self._forward, self, wrappers).execute(
            x, timestep, context, clip_fea, time_dim_concat, options, **kwargs)

    def _forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, clip_fea: Any,
                 time_dim_concat: Any, transformer_options: dict, **kwargs: Any) -> torch.Tensor:
        return self.inner.forward_timesteps(x, timestep, context)


class BaseModel(nn.Module):
    def __init__(self, diffusion_model: nn.Module) -> None:
        super().__init__()
        self.diffusion_model = diffusion_model
        self.latent_format = Wan21()
        self.manual_cast_dtype: torch.dtype | None = None
        self.current_patcher: Any = None

    def get_dtype(self) -> torch.dtype:
        return next(self.diffusion_model.parameters()).dtype

    def memory_required(self, input_shape: list[int]) -> int:
        return int(torch.Size(input_shape).numel()) * 4 * 64

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, c_concat: Any = None, c_crossattn: Any = None,
                    control: Any = None, transformer_options: dict | None = None, **kwargs: Any) -> torch.Tensor:
        sigma = t
        timestep = (sigma * 1000).float()
        output = self.diffusion_model(x, timestep, context=c_crossattn, transformer_options=transformer_options or {})
        return x - output.float() * sigma.view(-1, 1, 1, 1, 1)


class WAN21(BaseModel):
    """A Wan2.1 model."""


class WAN22(WAN21):
    """Wan2.2 TI2V-5B: Wan with the 48-channel Wan2.2 latent format (a WAN21 subclass, as in ComfyUI)."""

    def __init__(self, diffusion_model: nn.Module) -> None:
        super().__init__(diffusion_model)
        self.latent_format = Wan22()


class SD15(BaseModel):
    """Another architecture (for the non-Wan error)."""
