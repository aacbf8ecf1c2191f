"""Wan2.2's per-token timesteps as the per-frame timesteps `WanDiT` takes.

The official Wan2.2 ``WanModel.forward`` expands every timestep to one value per token (``[B, seq_len]``,
token n = f*(H/2)*(W/2) + h*(W/2) + w, padded with extra entries up to ``seq_len``), and TI2V-5B builds
them from a mask over the latent grid: t for every token, 0 for the tokens of latent frame 0 in
image-to-video. Within a latent frame the value is therefore constant in every official use, and the
network then computes exactly what a per-frame timestep gives (the time embedding is per token, the
same for every token of a frame). `frame_timesteps_from_tokens` turns such a per-token row into the
per-frame one and refuses, in one line, a row that is not constant within a frame: `WanDiT` computes one
time embedding per frame and cannot represent it.
"""

from __future__ import annotations

import torch
from einops import rearrange

from pusa_fw.errors import InputError

__all__ = ["frame_timesteps_from_tokens", "velocity_from_token_timesteps"]


def frame_timesteps_from_tokens(token_timesteps: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """The per-frame timesteps `[B, F]` of official per-token timesteps `[B, seq_len]`.

    Args:
        token_timesteps: `[B, seq_len]` (or `[seq_len]` for one sample), seq_len >= F*h*w; the entries past
            the F*h*w real tokens are the official padding and are ignored (padding tokens never reach a
            real token: attention ignores them and unpatchify drops them).
        grid: the token grid `(F, h, w)` = (latent frames, latent height / 2, latent width / 2).

    Returns:
        `[B, F]` in the dtype of `token_timesteps`, one value per latent frame (bit-equal to its tokens').

    Raises:
        InputError: fewer entries than tokens, or a frame whose tokens do not all share one timestep.
    """
    if not isinstance(token_timesteps, torch.Tensor) or token_timesteps.ndim not in (1, 2):
        given = token_timesteps
        shape = tuple(given.shape) if isinstance(given, torch.Tensor) else type(given).__name__
        raise InputError(f"per-token timesteps must be [B, seq_len] or [seq_len], got {shape}")
    rows = token_timesteps if token_timesteps.ndim == 2 else token_timesteps[None]
    frames, height, width = grid
    tokens = frames * height * width
    if rows.shape[1] < tokens:
        raise InputError(
            f"per-token timesteps have {rows.shape[1]} entries but the latent has {tokens} tokens "
            f"({frames} frames x {height} x {width}); give one timestep per token (seq_len >= {tokens})"
        )
    per_frame = rearrange(rows[:, :tokens], "b (f n) -> b f n", f=frames)
    first = per_frame[:, :, :1]
    uneven = (per_frame != first).any(dim=2)
    if bool(uneven.any()):
        sample, frame = (int(index) for index in uneven.nonzero()[0])
        values = per_frame[sample, frame]
        raise InputError(
            f"per-token timesteps vary within latent frame {frame} (sample {sample}: "
            f"{float(values.min())} .. {float(values.max())}); WanDiT takes one timestep per latent frame, "
            "so give every token of a frame the same value (as Wan2.2's t2v and i2v masks do)"
        )
    return first[:, :, 0]


def velocity_from_token_timesteps(
    model: torch.nn.Module, latents: torch.Tensor, token_timesteps: torch.Tensor, context: torch.Tensor
) -> torch.Tensor:
    """Run `WanDiT.forward_timesteps` from official per-token timesteps (the Wan2.2 call signature).

    Args:
        model: a `WanDiT`.
        latents: `[B, in_dim, F, H, W]`.
        token_timesteps: `[B, seq_len]` network timesteps (0..1000), constant within each latent frame.
        context: `[B, L, text_dim]`.

    Returns:
        `[B, out_dim, F, H, W]`.

    Raises:
        InputError: see `frame_timesteps_from_tokens`, and every check of `WanDiT.forward_timesteps`.
    """
    if not isinstance(latents, torch.Tensor) or latents.ndim != 5:
        shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise InputError(f"latents must be [B, C, F, H, W], got {shape}")
    _, patch_height, patch_width = model.config.patch_size
    grid = (latents.shape[2], latents.shape[3] // patch_height, latents.shape[4] // patch_width)
    return model.forward_timesteps(latents, frame_timesteps_from_tokens(token_timesteps, grid), context)
