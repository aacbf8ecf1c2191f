"""Stand-in: the Wan2.1 and Wan2.2 latent formats (VAE latents normalised by the published mean and std)."""

from __future__ import annotations

import torch

from pusa_fw_wan.vae.checkpoint import (
    WAN21_LATENTS_MEAN,
    WAN21_LATENTS_STD,
    WAN22_LATENTS_MEAN,
    WAN22_LATENTS_STD,
)


class Wan21:
    latent_channels = 16
    means, stds = WAN21_LATENTS_MEAN, WAN21_LATENTS_STD

    def __init__(self) -> None:
        self.latents_mean = torch.tensor(self.means).view(1, self.latent_channels, 1, 1, 1)
        self.latents_std = torch.tensor(self.stds).view(1, self.latent_channels, 1, 1, 1)

    def process_in(self, latent: torch.Tensor) -> torch.Tensor:
        return (latent - self.latents_mean.to(latent)) / self.latents_std.to(latent)

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        return latent * self.latents_std.to(latent) + self.latents_mean.to(latent)


class Wan22(Wan21):
    latent_channels = 48
    means, stds = WAN22_LATENTS_MEAN, WAN22_LATENTS_STD
