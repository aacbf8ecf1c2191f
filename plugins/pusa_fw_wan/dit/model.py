"""`WanDiT`: the Wan2.1 text-to-video DiT with one timestep per latent frame.

A faithful re-implementation of the official ``WanModel`` (t2v) that takes per-frame sigmas `[B, F]`.
The time embedding and the six modulation vectors are computed once per frame (`[B, F, D]`,
`[B, F, 6, D]`, float32) and broadcast over that frame's tokens inside each block. With all frames
equal it is the official Wan2.1 scalar-timestep model; with per-frame values it equals Wan2.2's
per-token path (and Pusa's ``WanModelPusa``) without ever building a per-token time tensor.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from pusa_fw.backbone import Backbone
from pusa_fw.errors import InputError

from pusa_fw_wan.dit.config import WanConfig
from pusa_fw_wan.dit.blocks import AttentionBlock, Head, timestep_sinusoid
from pusa_fw_wan.dit.partial import PARTIAL_KV_MODES, WanFrameMemory, velocity_partial
from pusa_fw_wan.dit.rope import ROPE_PRECISIONS, cached_rope_frequencies
from pusa_fw_wan.dit.storage import LowPrecisionLinear, set_weights_dtype

__all__ = ["FP32_PARAMETER_PATTERNS", "WanDiT"]

# Parameters that stay float32 whatever the compute dtype (the official code runs them under an fp32
# autocast region): time MLP, modulation tables, the head, and every norm weight.
FP32_PARAMETER_PATTERNS = ("time_embedding.", "time_projection.", "modulation", "head.", "norm")


def _keeps_fp32(name: str) -> bool:
    return any(pattern in name for pattern in FP32_PARAMETER_PATTERNS)


class WanDiT(nn.Module, Backbone):
    """Wan2.1 T2V DiT taking per-frame sigmas.

    Calling the module (``model(latents, sigmas, context)``) is the same as `velocity`; use
    `forward_timesteps` to feed Wan's 0..1000 network timesteps directly (as the official code does).
    The module tree and ``state_dict()`` keys equal the official checkpoint keys.

    Inference checks the sigma values, embeds each distinct timestep once and applies RoPE in float64,
    as the official code does. A training step (module in ``train()`` mode *and* gradients on; see
    `is_training_step`) skips what it does not need: the value checks that read tensors back to the
    host (its sigmas come from a validated sampler; shapes are still checked), the de-duplication of
    timesteps (a sort and a sync), and the float64 RoPE round trip (it rotates in complex64 with the
    same table, built once per grid).

    Args:
        config: the architecture; a randomly initialised model is built (on the default device, or under
            ``torch.device("meta")`` when used by the checkpoint loader).
    """

    def __init__(self, config: WanConfig) -> None:
        super().__init__()
        if not isinstance(config, WanConfig):
            raise InputError(
                f"WanDiT needs a WanConfig, got {type(config).__name__}; e.g. WanConfig.t2v_1_3b()"
            )
        self.config = config
        dim = config.dim
        self.patch_embedding = nn.Conv3d(
            config.in_dim, dim, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.text_embedding = nn.Sequential(
            nn.Linear(config.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim)
        )
        self.time_embedding = nn.Sequential(nn.Linear(config.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(
            AttentionBlock(
                dim, config.ffn_dim, config.num_heads, config.qk_norm, config.cross_attn_norm, config.eps
            )
            for _ in range(config.num_layers)
        )
        self.head = Head(dim, config.out_dim * config.patch_volume, config.eps)
        self.gradient_checkpointing = False
        # Set by pusa_fw_wan.parallel.enable_sequence_parallel; None runs on one process.
        self.sequence_parallel: Any = None
        self._rope_precision = "float64"
        self._partial_kv = "cached"

    @property
    def rope_precision(self) -> str:
        """Precision of the inference RoPE rotation: ``"float64"`` (default, the official reference) or
        ``"float32"`` (complex64 table, half the memory traffic of q/k; training always uses float32).
        See `pusa_fw_wan.dit.rope` for the error of float32 against float64."""
        return self._rope_precision

    @rope_precision.setter
    def rope_precision(self, value: str) -> None:
        if value not in ROPE_PRECISIONS:
            raise InputError(f"rope_precision {value!r} is unknown; use one of {', '.join(ROPE_PRECISIONS)}")
        self._rope_precision = value

    @property
    def partial_kv(self) -> str:
        """How frames skipped by `velocity_partial` take part in self-attention: ``"cached"`` (default: their
        keys and values from their last computation, kept per block in the memory) or ``"drop"`` (not at
        all, no memory). See `pusa_fw_wan.dit.partial`."""
        return self._partial_kv

    @partial_kv.setter
    def partial_kv(self, value: str) -> None:
        if value not in PARTIAL_KV_MODES:
            raise InputError(f"partial_kv {value!r} is unknown; use one of {', '.join(PARTIAL_KV_MODES)}")
        self._partial_kv = value

    # ------------------------------------------------------------------ construction and loading

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        config: WanConfig | None = None,
        weights_dtype: str | torch.dtype | None = None,
    ) -> WanDiT:
        """Load a checkpoint (official directory, sharded, diffusers ``transformer/``, or single file).

        The model is built on the meta device and filled tensor by tensor, so peak host memory is about
        one copy of the weights in their storage dtype. See `pusa_fw_wan.dit.checkpoint.load_wan_dit`.

        Args:
            path: checkpoint directory or ``.safetensors`` file (fp32, bf16, fp16 or fp8, scaled or not).
            dtype: compute dtype of the large linears; time MLP, modulation, norms and head stay float32.
            device: where the weights go.
            config: the architecture, when it cannot be read from ``config.json`` or the tensor shapes.
            weights_dtype: storage dtype of the large linears (``auto``, ``float32``, ``bfloat16``,
                ``float16``, ``float8_e4m3fn``, ``float8_e5m2``); auto keeps an fp8 file in fp8 and
                stores anything else in `dtype`.

        Raises:
            CheckpointError: missing file, unknown layout, or missing / unexpected / mis-shaped keys.
        """
        from pusa_fw_wan.dit.checkpoint import load_wan_dit

        return load_wan_dit(path, dtype=dtype, device=device, config=config, weights_dtype=weights_dtype)

    def set_compute_dtype(self, dtype: torch.dtype) -> WanDiT:
        """Cast the large linears and embeddings to ``dtype``; `FP32_PARAMETER_PATTERNS` stay float32.

        Large linears stored in another dtype (`set_weights_dtype`) keep their stored weights and compute
        in ``dtype`` from now on.
        """
        low_precision = {f"{path}.weight" for path, module in self.named_modules()
                         if isinstance(module, LowPrecisionLinear)}
        for module in self.modules():
            if isinstance(module, LowPrecisionLinear):
                module.compute_dtype = dtype
        for name, parameter in self.named_parameters():
            if name in low_precision:
                continue
            target = torch.float32 if _keeps_fp32(name) else dtype
            if parameter.dtype != target:
                parameter.data = parameter.data.to(target)
        return self

    def set_weights_dtype(self, weights_dtype: str | torch.dtype | None) -> WanDiT:
        """Store the large linears (block q/k/v/o and FFN) in ``weights_dtype``, computed in `compute_dtype`.

        fp8 gets a per-tensor scale computed from the current weights. See `pusa_fw_wan.dit.storage`.
        """
        set_weights_dtype(self, weights_dtype, self.compute_dtype)
        return self

    @property
    def weights_dtype(self) -> torch.dtype:
        """Storage dtype of the large linears."""
        return self.blocks[0].ffn[0].weight.dtype

    @property
    def compute_dtype(self) -> torch.dtype:
        """Dtype of the patch embedding, i.e. of the large linears."""
        return self.patch_embedding.weight.dtype

    @property
    def is_training_step(self) -> bool:
        """True in ``train()`` mode with gradients on: the forward takes the lean training path."""
        return self.training and torch.is_grad_enabled()

    def enable_gradient_checkpointing(self, enabled: bool = True, *, token_chunks: int = 1) -> None:
        """Recompute each block in the backward pass instead of storing its activations.

        Args:
            enabled: checkpoint every block.
            token_chunks: > 1 also checkpoints each block's per-token parts (cross-attention, and the FFN
                with its norm and modulation) over this many groups of whole frames, so the backward of a
                block holds one group's activations of them at a time (most of its peak) for one more
                forward of them; the gradients may differ from one pass in the last bits. Inference is
                unaffected.

        Raises:
            InputError: `token_chunks` below 1.
        """
        if isinstance(token_chunks, bool) or not isinstance(token_chunks, int) or token_chunks < 1:
            raise InputError(f"token_chunks must be an integer >= 1 (1: no chunking), got {token_chunks!r}")
        self.gradient_checkpointing = enabled
        for block in self.blocks:
            block.token_chunks = token_chunks

    # ------------------------------------------------------------------ public prediction API

    def velocity(self, latents: torch.Tensor, sigmas: torch.Tensor, context: Any) -> torch.Tensor:
        """Predict the flow-matching velocity ``eps - x0``.

        Args:
            latents: `[B, in_dim, F, H, W]`; H and W multiples of the spatial patch.
            sigmas: `[B, F]` per-frame noise levels in [0, 1], or `[B]` for one level per sample.
            context: `[B, L, text_dim]` text-encoder features, L <= text_len (zero-padded inside, as the
                official code does; pad shorter prompts of a batch with zero rows).

        Returns:
            `[B, out_dim, F, H, W]` velocity in the dtype of ``latents``.
        """
        return self(latents, sigmas, context)

    def velocity_partial(
        self,
        latents: torch.Tensor,
        sigmas: torch.Tensor,
        context: Any,
        *,
        compute: torch.Tensor,
        memory: Any | None,
    ) -> tuple[torch.Tensor, WanFrameMemory]:
        """The velocity of the frames in `compute` only; the skipped frames' tokens go through no block.

        They take part in self-attention as `partial_kv` says (default: their keys and values cached per
        block from their last computation). Inference only; see `pusa_fw_wan.dit.partial`.

        Args:
            latents: `[B, in_dim, F, H, W]` (the skipped frames' values are not read).
            sigmas: `[B, F]` noise levels of every frame.
            context: `[B, L, text_dim]`.
            compute: `[F]` bool, at least one True.
            memory: what the previous call for this (sample, guidance branch) returned (updated in place);
                None only with `compute` all True.

        Returns:
            `[B, out_dim, Fc, H, W]` velocity of the computed frames in window order, and the memory.
        """
        return velocity_partial(self, latents, sigmas, context, compute=compute, memory=memory)

    def forward(self, latents: torch.Tensor, sigmas: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Same as `velocity` (sigmas in [0, 1]; the network timestep ``1000 * sigma`` is formed here)."""
        return self.forward_timesteps(latents, self._timesteps_of(sigmas), context)

    def _timesteps_of(self, sigmas: torch.Tensor) -> torch.Tensor:
        """Network timesteps ``1000 * sigma`` (float64), after checking the sigmas (inference)."""
        if not isinstance(sigmas, torch.Tensor):
            raise InputError(f"sigmas must be a tensor of shape [B] or [B, F], got {type(sigmas).__name__}")
        if sigmas.numel() > 0 and not self.is_training_step:
            low, high = (float(value) for value in torch.aminmax(sigmas.detach().to(torch.float64)))
            if not (math.isfinite(low) and math.isfinite(high)):
                raise InputError("sigmas contain NaN or inf; every frame needs a sigma in [0, 1]")
            if not (0.0 <= low and high <= 1.0):
                raise InputError(
                    f"sigmas must lie in [0, 1] (1 = pure noise), got values in [{low}, {high}]; "
                    "pass sigmas, not Wan's 0..1000 timesteps (use forward_timesteps for those)"
                )
        return sigmas.to(torch.float64) * 1000.0

    def forward_timesteps(
        self, latents: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        """Predict the velocity from Wan network timesteps (0..1000 scale).

        Args:
            latents: `[B, in_dim, F, H, W]`.
            timesteps: `[B, F]` or `[B]` network timesteps (converted to float64 for the sinusoid).
            context: `[B, L, text_dim]`, L <= text_len.

        Returns:
            `[B, out_dim, F, H, W]` in the dtype of ``latents``.
        """
        self._check_inputs(latents, timesteps, context)
        config = self.config
        patch_frames, patch_height, patch_width = config.patch_size
        grid = (
            latents.shape[2] // patch_frames,
            latents.shape[3] // patch_height,
            latents.shape[4] // patch_width,
        )
        # Sequence parallel (pusa_fw_wan.parallel.sequence): this rank keeps its own whole frames with
        # their time embedding and modulation; the velocity frames are gathered at the end.
        shard = self.sequence_parallel
        if shard is not None:
            shard.begin(grid[0], grid[1] * grid[2], config.num_heads)
        latents_in = latents if shard is None else shard.local_frames(latents, dim=2)
        local_frames, first_frame = latents_in.shape[2], 0 if shard is None else shard.first_frame

        tokens = self.patch_embedding(latents_in.to(self.patch_embedding.weight.dtype))
        # contiguous: elementwise ops keep their inputs' strides, so a channels-first view would propagate
        # through the whole residual stream and make every norm copy its input.
        x = rearrange(tokens, "b d f h w -> b (f h w) d").float().contiguous()
        time_embedding, time_projection = self._embed_time(timesteps, grid[0], x.device)
        if shard is not None:
            time_embedding = shard.local_frames(time_embedding, dim=1)
            time_projection = shard.local_frames(time_projection, dim=1)
        text = self._embed_text(context)
        rope_dtype = torch.complex64 if self.is_training_step or self.rope_precision == "float32" else (
            torch.complex128)
        rope = cached_rope_frequencies((local_frames, grid[1], grid[2]), config.head_dim, x.device,
                                       config.rope_max_positions, rope_dtype, first_frame)

        use_checkpointing = self.gradient_checkpointing and torch.is_grad_enabled()
        for block in self.blocks:
            if use_checkpointing:
                x = checkpoint(block, x, time_projection, text, rope, use_reentrant=False)
            else:
                x = block(x, time_projection, text, rope)

        with torch.autocast(device_type=x.device.type, enabled=False):
            out = self.head(x, time_embedding)
        velocity = rearrange(
            out,
            "b (f h w) (pf ph pw c) -> b c (f pf) (h ph) (w pw)",
            f=local_frames,
            h=grid[1],
            w=grid[2],
            pf=patch_frames,
            ph=patch_height,
            pw=patch_width,
        )
        if shard is not None:
            velocity = shard.gather_frames(velocity, dim=2)
        return velocity.to(latents.dtype)

    # ------------------------------------------------------------------ pieces

    def _embed_time(
        self, timesteps: torch.Tensor, frames: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Time embedding and projection, once per distinct timestep, in float32.

        For inference the time MLP runs on the distinct timestep values only (so equal frames, or a `[B]`
        input, give bit-identical embeddings), and the results are gathered per frame. In a training step
        (`is_training_step`) it runs on every (sample, frame) value directly: no sort, no host sync.

        Args:
            timesteps: `[B]` or `[B, F]` network timesteps.
            frames: F, the number of latent frames (token frames).
            device: device of the activations.

        Returns:
            `time_embedding` `[B, F, D]` and `time_projection` `[B, F, 6, D]`, float32. For `[B]` input they
            are expanded over F (stride 0, no copy).
        """
        per_sample = timesteps.ndim == 1
        per_frame = rearrange(timesteps, "b -> b 1") if per_sample else timesteps
        batch, given_frames = per_frame.shape
        flat = rearrange(per_frame.to(device=device, dtype=torch.float64), "b f -> (b f)")
        if self.is_training_step:
            distinct, index = flat, None
        else:
            distinct, index = torch.unique(flat, return_inverse=True)
        sinusoid = timestep_sinusoid(distinct, self.config.freq_dim)
        with torch.autocast(device_type=device.type, enabled=False):
            first = self.time_embedding[0]
            embedding = self.time_embedding(sinusoid.to(first.weight.dtype)).float()
            projection_linear = self.time_projection[1]
            projection = self.time_projection(embedding.to(projection_linear.weight.dtype)).float()
        if index is not None:
            embedding, projection = embedding[index], projection[index]
        time_embedding = rearrange(embedding, "(b f) d -> b f d", b=batch)
        time_projection = rearrange(projection, "(b f) (six d) -> b f six d", b=batch, six=6)
        if given_frames != frames:
            time_embedding = time_embedding.expand(batch, frames, -1)
            time_projection = time_projection.expand(batch, frames, -1, -1)
        return time_embedding, time_projection

    def _embed_text(self, context: torch.Tensor) -> torch.Tensor:
        """Zero-pad the text rows to ``text_len`` and embed: `[B, L, text_dim]` -> `[B, text_len, D]`."""
        padded = F.pad(context, (0, 0, 0, self.config.text_len - context.shape[1]))
        return self.text_embedding(padded.to(self.text_embedding[0].weight.dtype))

    def _check_inputs(self, latents: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor) -> None:
        config = self.config
        if not isinstance(latents, torch.Tensor) or latents.ndim != 5:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise InputError(f"latents must be [B, C, F, H, W], got {shape}")
        batch, channels, frames, height, width = latents.shape
        if channels != config.in_dim:
            raise InputError(f"latents have {channels} channels, the model expects in_dim={config.in_dim}")
        _, patch_height, patch_width = config.patch_size
        if height % patch_height or width % patch_width:
            raise InputError(
                f"latent height/width {height}x{width} must be multiples of the patch "
                f"{patch_height}x{patch_width}; crop or resize the video to a multiple of "
                f"{8 * patch_height} pixels"
            )
        if not isinstance(timesteps, torch.Tensor) or timesteps.shape not in ((batch,), (batch, frames)):
            shape = (
                tuple(timesteps.shape) if isinstance(timesteps, torch.Tensor) else type(timesteps).__name__
            )
            raise InputError(
                f"sigmas/timesteps must be [B]=[{batch}] or [B, F]=[{batch}, {frames}], got {shape}"
            )
        if not self.is_training_step and not bool(torch.isfinite(timesteps).all()):
            raise InputError("sigmas/timesteps contain NaN or inf")
        if not isinstance(context, torch.Tensor) or context.ndim != 3:
            shape = tuple(context.shape) if isinstance(context, torch.Tensor) else type(context).__name__
            raise InputError(f"context must be [B, L, text_dim] text features, got {shape}")
        if context.shape[0] != batch or context.shape[2] != config.text_dim:
            raise InputError(
                f"context {tuple(context.shape)} does not fit: expected "
                f"[B={batch}, L, text_dim={config.text_dim}]"
            )
        if context.shape[1] > config.text_len:
            raise InputError(
                f"context has {context.shape[1]} rows, more than text_len={config.text_len}; "
                f"truncate the prompt tokens to {config.text_len}"
            )
