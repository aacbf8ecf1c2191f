"""Stand-in: the Wan2.1 latent format (normalise VAE latents by the published per-channel mean and std)."""

from __future__ import annotations

import torch

from pusa_fw_wan.vae.checkpoint import WAN21_LATENTS_MEAN, WAN21_LATENTS_STD


class Wan21:
    latent_channels = 16

    def __init__(self) -> None:
        self.latents_mean = torch.tensor(WAN21_LATENTS_MEAN).view(1, 16, 1, 1, 1)
        self.latents_std = torch.tensor(WAN21_LATENTS_STD).view(1, 16, 1, 1, 1)

    def process_in(self, latent: torch.Tensor) -> torch.Tensor:
        return (latent - self.latents_mean.to(latent)) / self.latents_std.to(latent)

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        return latent * self.latents_std.to(latent) + self.latents_mean.to(latent)
