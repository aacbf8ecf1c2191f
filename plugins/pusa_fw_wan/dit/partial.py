"""Partial computation of `WanDiT`: the velocity of some frames only (`PartialBackbone.velocity_partial`).

Only the computed frames' tokens go through the model: the patch embedding, every block's linears,
modulation, norms, cross-attention and FFN, the attention queries, and the head. The saved work is real:
a call computing ``Fc`` of ``F`` frames runs ``Fc / F`` of the tokens through every block
(`WanFrameMemory.token_block_evals`).

Wan's self-attention is bidirectional, so the skipped frames must still be seen. How is set by
``WanDiT.partial_kv`` (`PARTIAL_KV_MODES`):

- ``"cached"`` (default): every block keeps the keys and values of every frame from that frame's last
  computation (after the q/k RMSNorm and after RoPE at the frame's true position, in the attention dtype).
  A call writes the computed frames' fresh keys and values into that memory and their queries attend to
  all of it, in token order: a computed frame sees every frame, the skipped ones as they were when last
  computed. Cost: ``2 * num_layers * B * L * dim`` elements of the attention dtype per (sample, guidance
  branch) memory (`kv_memory_bytes`); Wan2.1-14B at 480p x 81 frames (L = 21 * 30 * 52 = 32760 tokens,
  40 blocks, dim 5120) in bf16: 2 * 40 * 32760 * 5120 * 2 B = 26.8 GB per branch, 1.3B (30 blocks, dim
  1536): 6.0 GB.
- ``"drop"``: no memory; the computed frames attend to each other only (the skipped frames are absent
  from self-attention, the computed ones keep their true RoPE positions).

With ``compute`` all True the call is the full forward, bit for bit (`WanDiT.velocity`), and (re)fills
the memory. With a memory from the same inputs and some frames computed, the computed frames' velocity
equals the full call's within float rounding (fewer query rows change how the GEMMs and the attention
kernel block their sums). The normal forward never comes here and does no extra work.

Inference only (no gradients), one process (no sequence parallel), temporal patch 1 (Wan2.1, Wan2.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from einops import rearrange

from pusa_fw.backbone import FrameMemory
from pusa_fw.errors import InputError

from pusa_fw_wan.dit.attention import SelfAttention
from pusa_fw_wan.dit.rope import cached_rope_frequencies
from pusa_fw_wan.dit.storage import compute_dtype_of

if TYPE_CHECKING:
    from pusa_fw_wan.dit.config import WanConfig
    from pusa_fw_wan.dit.model import WanDiT

__all__ = ["PARTIAL_KV_MODES", "WanFrameMemory", "kv_memory_bytes", "velocity_partial"]

PARTIAL_KV_MODES = ("cached", "drop")
"""How skipped frames take part in self-attention (``WanDiT.partial_kv``): their keys and values from their
last computation (``cached``), or not at all (``drop``)."""


def kv_memory_bytes(config: WanConfig, batch: int, tokens: int, dtype: torch.dtype) -> int:
    """Bytes of a ``cached`` memory: keys and values of `tokens` tokens in every block, ``2 * layers * B * L *
    dim * itemsize`` (26.8e9 for 14B at 480p x 81 in bf16, B = 1)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 2 * config.num_layers * batch * tokens * config.dim * itemsize


@dataclass(eq=False)
class WanFrameMemory(FrameMemory):
    """What `WanDiT.velocity_partial` keeps between calls of one (sample, guidance branch).

    Attributes:
        kv: the ``partial_kv`` mode it was made for.
        grid: `(B, F, H, W)`: batch and token grid of the window.
        dtype: attention dtype of the keys and values.
        device: where they live.
        keys: per block `[B, F * H * W, heads, head_dim]` (empty for ``drop``), updated in place.
        values: per block, the same.
        token_block_evals: tokens that went through each block times the blocks, in the call that
            returned this memory (``B * Fc * H * W * num_layers``).
    """

    kv: str
    grid: tuple[int, int, int, int]
    dtype: torch.dtype
    device: torch.device
    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    token_block_evals: int = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the keys and values."""
        return sum(tensor.numel() * tensor.element_size() for tensor in [*self.keys, *self.values])

    def store(self, block: int, keys: torch.Tensor, values: torch.Tensor,
              frame_index: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Write block `block`'s fresh keys and values and return the whole window's.

        Args:
            block: block number.
            keys: `[B, Lc, heads, head_dim]` of the computed frames, in `dtype`.
            values: the same.
            frame_index: `[Fc]` computed frames (sorted), or None when every frame is computed.

        Returns:
            keys and values `[B, L, heads, head_dim]` of every frame in token order.
        """
        if frame_index is None:
            if len(self.keys) == block:  # a fresh memory: keep the tensors themselves, no copy
                self.keys.append(keys)
                self.values.append(values)
                return keys, values
            self.keys[block].copy_(keys)
            self.values[block].copy_(values)
        else:
            frames = self.grid[1]
            for buffer, fresh in ((self.keys[block], keys), (self.values[block], values)):
                per_frame = rearrange(buffer, "b (f s) h d -> b f s h d", f=frames)
                per_frame.index_copy_(1, frame_index, rearrange(fresh, "b (f s) h d -> b f s h d",
                                                                f=frame_index.numel()))
        return self.keys[block], self.values[block]


def _attend_with_memory(
    self_attn: SelfAttention,
    tokens: torch.Tensor,
    rope: torch.Tensor,
    memory: WanFrameMemory,
    block: int,
    frame_index: torch.Tensor | None,
) -> torch.Tensor:
    """Self-attention of the computed tokens `[B, Lc, D]` to the window (`WanFrameMemory.store`) or, with
    ``drop``, to themselves. Returns `[B, Lc, D]`."""
    queries, keys, values = self_attn.project(tokens, rope)
    dtype = compute_dtype_of(self_attn.v)
    keys, values = keys.to(dtype), values.to(dtype)  # what SDPA casts them to anyway
    if memory.kv == "cached":
        keys, values = memory.store(block, keys, values, frame_index)
    return self_attn._attend(queries, keys, values)


def _frame_index(compute: Any, frames: int, device: torch.device) -> torch.Tensor:
    """The sorted indices `[Fc]` of the True frames of a `[F]` bool mask (on `device`)."""
    is_mask = isinstance(compute, torch.Tensor) and compute.dtype == torch.bool
    if not is_mask or tuple(compute.shape) != (frames,):
        described = (f"{compute.dtype} {tuple(compute.shape)}" if isinstance(compute, torch.Tensor)
                     else type(compute).__name__)
        raise InputError(f"compute must be a bool tensor of shape [{frames}] (one per latent frame), "
                         f"got {described}")
    frame_index = torch.nonzero(compute.to(device)).flatten()
    if frame_index.numel() == 0:
        raise InputError("compute selects no frame; ask for at least one frame (or skip the call)")
    return frame_index


def _checked_memory(memory: Any, everything: bool, kv: str, grid: tuple[int, int, int, int],
                    dtype: torch.dtype, device: torch.device, layers: int) -> WanFrameMemory:
    """The memory this call uses: the given one when it fits, a fresh one for a call computing every frame."""
    fits = (isinstance(memory, WanFrameMemory) and memory.kv == kv and memory.grid == grid
            and memory.dtype == dtype and memory.device == device
            and len(memory.keys) == (layers if kv == "cached" else 0))
    if fits:
        return memory
    if everything:
        return WanFrameMemory(kv=kv, grid=grid, dtype=dtype, device=device)
    if memory is None:
        raise InputError("velocity_partial got memory=None with some frames skipped; the first call of a "
                         "sample must compute every frame (compute all True)")
    if not isinstance(memory, WanFrameMemory):
        raise InputError(f"velocity_partial got a memory of type {type(memory).__name__}; pass what the "
                         "previous WanDiT.velocity_partial call returned, or compute every frame")
    raise InputError(
        f"the memory (partial_kv={memory.kv!r}, grid {memory.grid}, {memory.dtype}, {memory.device}) "
        f"does not fit this call (partial_kv={kv!r}, grid {grid}, {dtype}, {device}); compute every frame "
        "to start a new one"
    )


def velocity_partial(
    model: WanDiT,
    latents: torch.Tensor,
    sigmas: torch.Tensor,
    context: torch.Tensor,
    *,
    compute: torch.Tensor,
    memory: Any | None,
) -> tuple[torch.Tensor, WanFrameMemory]:
    """`WanDiT.velocity_partial` (see the module docstring).

    Args:
        model: the DiT.
        latents: `[B, in_dim, F, H, W]`; the skipped frames' values are not read.
        sigmas: `[B, F]` (or `[B]`) noise levels in [0, 1]; every frame's, as for `WanDiT.velocity`.
        context: `[B, L, text_dim]`.
        compute: `[F]` bool, the frames to compute (at least one).
        memory: the `WanFrameMemory` the previous call for this (sample, guidance branch) returned; None
            only when every frame is computed. It is updated in place and returned.

    Returns:
        `[B, out_dim, Fc, H, W]` velocity of the computed frames in window order (dtype of ``latents``), and
        the memory.

    Raises:
        InputError: gradients on, a sequence-parallel model, bad inputs, or a memory that does not fit.
    """
    if torch.is_grad_enabled():
        raise InputError("velocity_partial is inference-only; call it under torch.no_grad() or "
                         "torch.inference_mode()")
    if model.sequence_parallel is not None:
        raise InputError("velocity_partial does not run on a sequence-parallel WanDiT; use velocity "
                         "(--cache teacache or none) with sequence parallelism")
    config = model.config
    patch_frames, patch_height, patch_width = config.patch_size
    if patch_frames != 1:
        raise InputError(f"velocity_partial needs a temporal patch of 1, this model has {patch_frames}")
    timesteps = model._timesteps_of(sigmas)
    model._check_inputs(latents, timesteps, context)
    batch, _, frames, height, width = latents.shape
    grid = (frames, height // patch_height, width // patch_width)
    frame_index = _frame_index(compute, frames, latents.device)
    computed = frame_index.numel()
    everything = computed == frames
    dtype = compute_dtype_of(model.blocks[0].self_attn.v)
    memory = _checked_memory(memory, everything, model.partial_kv, (batch, *grid), dtype, latents.device,
                             len(model.blocks))

    selected = latents if everything else latents.index_select(2, frame_index)
    tokens = model.patch_embedding(selected.to(model.patch_embedding.weight.dtype))
    x = rearrange(tokens, "b d f h w -> b (f h w) d").float().contiguous()
    time_embedding, time_projection = model._embed_time(timesteps, frames, x.device)
    rope_dtype = torch.complex64 if model.rope_precision == "float32" else torch.complex128
    rope = cached_rope_frequencies(grid, config.head_dim, x.device, config.rope_max_positions, rope_dtype)
    if not everything:
        time_embedding = time_embedding.index_select(1, frame_index)
        time_projection = time_projection.index_select(1, frame_index)
        rope = rearrange(rearrange(rope, "(f s) p -> f s p", f=frames).index_select(0, frame_index),
                         "f s p -> (f s) p")
    text = model._embed_text(context)

    stored_index = None if everything else frame_index
    for number, block in enumerate(model.blocks):
        attention = partial(_attend_with_memory, block.self_attn, rope=rope, memory=memory, block=number,
                            frame_index=stored_index)
        x = block(x, time_projection, text, rope, attention=attention)

    with torch.autocast(device_type=x.device.type, enabled=False):
        out = model.head(x, time_embedding)
    velocity = rearrange(out, "b (f h w) (pf ph pw c) -> b c (f pf) (h ph) (w pw)", f=computed, h=grid[1],
                         w=grid[2], pf=patch_frames, ph=patch_height, pw=patch_width)
    memory.token_block_evals = batch * computed * grid[1] * grid[2] * len(model.blocks)
    return velocity.to(latents.dtype), memory
