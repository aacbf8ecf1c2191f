"""The ComfyUI node pack's unit tests: ComfyUI is absent, so a small stand-in (``standin/``) goes on the path.

Fixtures: a tiny random Wan DiT as a ComfyUI `MODEL` (stand-in `ModelPatcher` around a `WAN21` whose
diffusion model was loaded from a ComfyUI-layout state dict), the same weights as our `WanDiT`, a tiny
`WanVAE` and a ComfyUI-style `VAE` around it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

STANDIN = Path(__file__).parent / "standin"
if str(STANDIN) not in sys.path:
    sys.path.insert(0, str(STANDIN))

TEXT_DIM = 32
HEAD_DIM = 16


@pytest.fixture(autouse=True)
def _reset_standin(tmp_path: Path) -> None:
    import comfy.model_management
    import comfy.model_patcher
    import comfy.samplers
    import comfy.utils
    import folder_paths
    import latent_preview

    comfy.model_management.reset()
    comfy.utils.bars.clear()
    comfy.model_patcher.events.clear()
    comfy.samplers.casts.clear()
    latent_preview.previews.clear()
    folder_paths.reset(str(tmp_path / "comfyui" / "models"))


@pytest.fixture(scope="session")
def tiny_dit() -> Any:
    from pusa_fw_wan.dit.config import WanConfig
    from pusa_fw_wan.dit.model import WanDiT
    from pusa_fw_wan.testing.tiny import randomise_parameters

    config = WanConfig(dim=32, num_heads=2, num_layers=2, ffn_dim=64, freq_dim=32, text_dim=TEXT_DIM)
    return randomise_parameters(WanDiT(config), torch.Generator().manual_seed(7)).eval()


def comfy_model(dit: Any) -> Any:
    """A stand-in ComfyUI `MODEL` built from `dit`'s weights in ComfyUI's checkpoint layout."""
    from comfy.model_base import WAN21, WanModel
    from comfy.model_patcher import ModelPatcher

    state = {f"model.diffusion_model.{key}": value.clone() for key, value in dit.state_dict().items()}
    return ModelPatcher(WAN21(WanModel(state, head_dim=HEAD_DIM)))


@pytest.fixture()
def model(tiny_dit: Any) -> Any:
    return comfy_model(tiny_dit)


class ComfyStyleVAE:
    """A ComfyUI-style `VAE` around our `WanVAE`: ``encode(IMAGE [T, H, W, 3] in [0, 1])`` -> raw latents.

    ComfyUI's VAE returns latents before the model's latent-format normalisation; our `WanVAE` returns
    them normalised, so this undoes it (the model's ``process_in`` redoes it). Like ComfyUI's, it says its
    ``latent_channels`` and ``downscale_index_formula`` (time, height, width): Wan2.1 16 and (4, 8, 8),
    Wan2.2 (`Wan22VAE`) 48 and (4, 16, 16).
    """

    def __init__(self, vae: Any) -> None:
        from comfy.latent_formats import Wan21, Wan22

        geometry = vae.geometry
        self.vae, self.calls = vae, 0
        self.format = Wan22() if geometry.channels == Wan22.latent_channels else Wan21()
        self.latent_channels = geometry.channels
        self.latent_dim = 3
        self.downscale_index_formula = (geometry.temporal_stride, geometry.spatial_factor, geometry.spatial_factor)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        video = pixels.movedim(-1, 0).unsqueeze(0) * 2.0 - 1.0
        return self.format.process_out(self.vae.encode(video))


@pytest.fixture(scope="session")
def tiny_vae() -> Any:
    from pusa_fw_wan.testing.tiny import randomise_parameters
    from pusa_fw_wan.vae.model import WanVAE

    return randomise_parameters(WanVAE(dim=8, z_dim=16), torch.Generator().manual_seed(3)).eval()


@pytest.fixture()
def comfy_vae(tiny_vae: Any) -> ComfyStyleVAE:
    return ComfyStyleVAE(tiny_vae)


def conditioning(tensor: torch.Tensor) -> list:
    """A ComfyUI `CONDITIONING` holding one text embedding."""
    return [[tensor, {"pooled_output": None}]]


@pytest.fixture(scope="session")
def tiny_model_format() -> Any:
    from comfy.latent_formats import Wan21

    return Wan21()
