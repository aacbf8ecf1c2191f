"""The device-memory model of Wan2.1 14B and Wan2.2 TI2V-5B in pusa-fw: measured on 1-3 blocks, projected.

Measured here (no GPU needed, and no compute): the real block code of `WanDiT` at the 14B width (dim 5120,
40 heads, ffn 13824, text dim 4096) runs on PyTorch's ``meta`` device under a dispatcher-level tensor
tracker, which adds up every storage an op creates and frees, with its real shape and dtype (compute dtype
bf16, as on a GPU). Attention is routed to PyTorch's flash kernel
(``_scaled_dot_product_flash_attention_for_cpu``: O(L) memory, saves out + logsumexp), standing in for the
CUDA flash/cuDNN kernels. From 1-3 real blocks at four reduced token counts (21 frames x 8x8 .. 20x32
patches) it measures

- weight bytes per block per storage dtype (bf16, fp8 e4m3fn) and of the non-block modules;
- activation bytes for inference (peak of one block pass), and for LoRA training with and without gradient
  checkpointing (bytes kept per block after the forward, and the peak on top of them in the backward), and
  with checkpointing plus the trainer's activation offload (`pusa_fw_train.activation_offload`, run as is:
  its host copies of the meta tensors are counted as host bytes, per block and shared), also with the
  cross-attention and FFN of each block checkpointed in groups of frames (`WanDiT`'s ``token_chunks``);
- LoRA r = 512 and r = 64 (Pusa targets q, k, v, o of both attentions + both FFN layers, fp32 factors):
  trainable bytes and the gradients the backward makes; AdamW (2 x fp32) and EMA (fp32) are counted.

Each per-token term is fitted as ``a + b * L`` by least squares (the fit error is printed) and checked
against a direct measurement at the 480p token count. Then it projects 40 blocks at 480p and 720p x 81 frames
(L = 32,760 / 75,600) for inference (bf16 / fp8, resident / block offload) and Pusa LoRA training (r 512 / 64,
bf16 / fp8 base, checkpointing, block swap N, activation offload, 1 GPU and 8-GPU FSDP2) against 24, 48 and
80 GB, with the host memory that block swap and activation offload need, and says whether issue 15's
training goals are met. Projections add 1 GiB for the CUDA context and do not model allocator fragmentation;
`benchmarks/gpu_check.py` compares them with a real peak when a GPU is at hand.

Wan2.2 TI2V-5B (``--model 5B``; dim 3072, 24 heads, ffn 14336, 30 blocks, 48 channels, patch 1x2x2 on the
Wan2.2 VAE's /16 latents) is measured the same way at its own width and 31 latent frames (121 frames), and
projected at 720p x 121 (704x1280: 44x80 latents, 22x40 patches, L = 27,280) and 480p x 121 (L = 12,090).
Its inference rows are the whole pipeline, phase by phase: the umT5-XXL encoder (bf16) for the prompt, the
DiT's denoising, and the Wan2.2 VAE's fp32 decode of 121 frames, tiled under the VAE's memory budget (its
traced per-cell estimate, `Wan22VAE.estimate_bytes`), with the full fp32 video on the device; resident keeps
all three models on the device, block offload streams the DiT's blocks (3 on the device at a time) and has
each other model on the device only in its phase; model offload has each model, the DiT whole, on the
device only in its phase. Its LoRA rows are Pusa's VTA LoRA (r 512 / 64) with the
options of the 14B (checkpointing, activation offload, token_chunks 11: groups of 3 of 31 latent frames,
block swap; AdamW, no EMA as the trainer's default: ``ema_decay`` adds one fp32 copy of the factors), and
its goals say which options make inference and the LoRA fit 24 and 48 GB.

    python benchmarks/bench_memory.py [--model 14B|5B|all] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.checkpoint import checkpoint

from pusa_fw_train.activation_offload import DEFAULT_MIN_BYTES, ActivationOffload
from pusa_fw_wan import WanConfig, WanDiT
from pusa_fw_wan.dit.rope import cached_rope_frequencies
from pusa_fw_wan.dit.storage import storage_bytes

GB = 1e9
FRAMES = 21
FIT_GRIDS = ((8, 8), (12, 16), (16, 24), (20, 32))  # patches per frame (h, w): L = 1344 .. 13440
# 832x480, 1280x720 and diffusion-pipe's 24 GB example 512x512, 81 frames -> 21 latents
RESOLUTIONS = {"480p": (30, 52), "720p": (45, 80), "512sq": (32, 32)}
CUDA_CONTEXT = 2**30
TARGETS = ("q", "k", "v", "o", "ffn.0", "ffn.2")
STORAGES = ("bfloat16", "float8_e4m3fn")
TOKEN_CHUNKS = 7  # WanDiT.enable_gradient_checkpointing(token_chunks=7): groups of 3 of the 21 latent frames
# (run_blocks mode, token_chunks) of the measured training setups
TRAIN_MODES = (
    ("train", 1), ("train_ckpt", 1), ("train_ckpt_offload", 1), ("train_ckpt_offload", TOKEN_CHUNKS)
)
# (measured setup, label, blocks swapped, GPUs) of the projected training rows
_CHUNKED = f"train_ckpt_offload+chunks{TOKEN_CHUNKS}"
TRAIN_SETUPS = (
    ("train_ckpt", "ckpt, 1 GPU", 0, 1),
    ("train_ckpt", "ckpt, block swap 20", 20, 1),
    ("train_ckpt", "ckpt, block swap 38", 38, 1),
    ("train_ckpt_offload", "ckpt + offload, 1 GPU", 0, 1),
    ("train_ckpt_offload", "ckpt + offload, swap 38", 38, 1),
    (_CHUNKED, f"ckpt + offload + token_chunks {TOKEN_CHUNKS}, 1 GPU", 0, 1),
    (_CHUNKED, f"ckpt + offload + token_chunks {TOKEN_CHUNKS}, swap 38", 38, 1),
    ("train_ckpt", "ckpt, 8-GPU FSDP2", 0, 8),
    ("train", "no ckpt, 1 GPU", 0, 1),
)
NUM_BLOCKS = 40
OFFLOAD_MIN_BYTES = DEFAULT_MIN_BYTES  # the trainer's threshold
OFFLOAD_BLOCKS = 3  # BlockOffload holds at most 3 blocks on the device: finishing, running, being copied
BUDGETS_GIB = (24, 48, 80)


def config_14b(num_layers: int) -> WanConfig:
    return WanConfig(dim=5120, ffn_dim=13824, num_heads=40, text_dim=4096, num_layers=num_layers)


def config_5b(num_layers: int) -> WanConfig:
    """Wan2.2 TI2V-5B (dim 3072, 24 heads, ffn 14336, text dim 4096, 48 channels in and out) with `num_layers`."""
    return WanConfig.ti2v_5b().model_copy(update={"num_layers": num_layers})


@dataclass(frozen=True)
class ModelSize:
    """One model the memory model measures and projects.

    Attributes:
        name: ``14B`` or ``5B``.
        config: `WanConfig` of the model with a given number of blocks.
        num_blocks: its blocks.
        frames: latent frames of the projected clips (and of the fit passes).
        resolutions: name -> patches per frame ``(h, w)`` of the projected sizes; ``check`` is the one the
            fits are checked against by a direct pass.
        check: name of that resolution.
        token_chunks: `WanDiT` token_chunks of the chunked training setup (groups of 3 latent frames).
        train_setups: ``(measured setup, label, blocks swapped, GPUs)`` of the projected LoRA rows.
        pipeline: whether inference rows count the text encoder and the VAE decode too (phase peaks).
        clip: ``(pixel frames, height, width)`` of each resolution, for the VAE decode (pipeline only).
        ema: whether LoRA rows count an fp32 EMA of the factors (the trainer's ``ema_decay``; off by default).
    """

    name: str
    config: Any
    num_blocks: int
    frames: int
    resolutions: dict[str, tuple[int, int]]
    check: str
    token_chunks: int
    train_setups: tuple[tuple[str, str, int, int], ...]
    pipeline: bool = False
    clip: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    ema: bool = True

    @property
    def train_modes(self) -> tuple[tuple[str, int], ...]:
        """(run_blocks mode, token_chunks) of the measured training setups."""
        return (("train", 1), ("train_ckpt", 1), ("train_ckpt_offload", 1), ("train_ckpt_offload", self.token_chunks))


SIZE_14B = ModelSize("14B", config_14b, NUM_BLOCKS, FRAMES, RESOLUTIONS, "480p", TOKEN_CHUNKS, TRAIN_SETUPS)
TOKEN_CHUNKS_5B = 11  # ceil(31 / 11) = 3: groups of 3 of the 31 latent frames, as the 14B's 7 of 21
_CHUNKED_5B = f"train_ckpt_offload+chunks{TOKEN_CHUNKS_5B}"
SIZE_5B = ModelSize(
    "5B", config_5b, 30, 31,
    # 704x1280 and 480x832 (Wan2.2 VAE /16, patch 2): 22x40 and 15x26 patches per frame
    {"720p": (22, 40), "480p": (15, 26)}, "480p", TOKEN_CHUNKS_5B,
    (
        ("train_ckpt", "ckpt, 1 GPU", 0, 1),
        ("train_ckpt", "ckpt, block swap 15", 15, 1),
        ("train_ckpt", "ckpt, block swap 28", 28, 1),
        ("train_ckpt_offload", "ckpt + offload, 1 GPU", 0, 1),
        ("train_ckpt_offload", "ckpt + offload, swap 28", 28, 1),
        (_CHUNKED_5B, f"ckpt + offload + token_chunks {TOKEN_CHUNKS_5B}, 1 GPU", 0, 1),
        (_CHUNKED_5B, f"ckpt + offload + token_chunks {TOKEN_CHUNKS_5B}, swap 28", 28, 1),
        ("train", "no ckpt, 1 GPU", 0, 1),
    ),
    pipeline=True,
    clip={"720p": (121, 704, 1280), "480p": (121, 480, 832)},
    ema=False,
)
SIZES = {"14B": SIZE_14B, "5B": SIZE_5B}


class TensorTracker(TorchDispatchMode):
    """Live and peak bytes of the storages ops create (keyed by storage identity: works on ``meta``).

    Storages on `device` (default: every storage) are device memory (`live`, `peak`); the others are host
    memory (`host_live`, `host_peak`): the host copies of activation offload. A copy of a ``meta`` tensor
    into a host tensor is sized but moves no data (a meta tensor has none).
    """

    def __init__(self, existing: list[torch.Tensor], device: torch.device | None = None) -> None:
        super().__init__()
        # Storages that exist already (weights, inputs) are not counted, also when an op returns a view
        # of them (a transposed weight).
        self.seen: set[int] = {tensor.untyped_storage()._cdata for tensor in existing}
        self.device = device
        self.live = 0
        self.peak = 0
        self.host_live = 0
        self.host_peak = 0

    def _count(self, storage: torch.UntypedStorage) -> None:
        key = storage._cdata
        if key in self.seen or storage.nbytes() == 0:
            return
        self.seen.add(key)
        on_host = self.device is not None and storage.device != self.device
        if on_host:
            self.host_live += storage.nbytes()
            self.host_peak = max(self.host_peak, self.host_live)
        else:
            self.live += storage.nbytes()
        weakref.finalize(storage, self._release, key, storage.nbytes(), on_host)

    def _release(self, key: int, nbytes: int, on_host: bool) -> None:
        if on_host:
            self.host_live -= nbytes
        else:
            self.live -= nbytes
        self.seen.discard(key)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func is torch.ops.aten.copy_.default and args[1].is_meta and not args[0].is_meta:
            return args[0]
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self._count(value.untyped_storage())
                self.peak = max(self.peak, self.live)
        return out


def flash_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any, **kwargs: Any
) -> torch.Tensor:
    """SDPA through the flash kernel (O(L) memory), as on a GPU; ``[B, H, L, d]`` in and out."""
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value)[0]


def build(
    num_layers: int,
    weights_dtype: str,
    lora_rank: int | None,
    config: WanConfig | None = None,
    device: str = "meta",
    token_chunks: int = 1,
) -> WanDiT:
    """A meta-device model (14B width unless `config`), bf16 compute, large linears in `weights_dtype`,
    optional fp32 LoRA on the Pusa targets, cross-attention and FFN checkpointed in `token_chunks` groups of
    frames when > 1.
    ``device="cpu"`` builds a real one (to check the accounting)."""
    with torch.device(device):
        model = WanDiT(config_14b(num_layers) if config is None else config)
    model.set_compute_dtype(torch.bfloat16).set_weights_dtype(weights_dtype)
    model.enable_gradient_checkpointing(False, token_chunks=token_chunks)  # run_blocks checkpoints the blocks
    model.requires_grad_(False)
    if lora_rank is not None:
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(r=lora_rank, lora_alpha=lora_rank, target_modules=list(TARGETS), lora_dropout=0.0)
        inject_adapter_in_model(config, model, adapter_name="default")
        for name, parameter in model.named_parameters():
            if ".default." in name:
                parameter.data = parameter.data.float()
                parameter.requires_grad_(True)
        model.train()
    return model.eval() if lora_rank is None else model


def _inputs(
    config: WanConfig, frames: int, grid: tuple[int, int], rope_dtype: torch.dtype, device: torch.device
) -> dict[str, torch.Tensor]:
    height, width = grid
    tokens = frames * height * width
    dim = config.dim
    return {
        "x": torch.zeros(1, tokens, dim, device=device),
        "time_projection": torch.zeros(1, frames, 6, dim, device=device),
        "time_embedding": torch.zeros(1, frames, dim, device=device),
        "context": torch.zeros(1, config.text_len, config.text_dim, device=device, dtype=torch.bfloat16),
        "rope": cached_rope_frequencies(
            (frames, height, width),
            config.head_dim,
            torch.device(device),
            config.rope_max_positions,
            rope_dtype,
            0,
        ),
    }


def run_blocks(model: WanDiT, grid: tuple[int, int], mode: str, frames: int = FRAMES) -> dict[str, float]:
    """One pass over the model's blocks (+ text embedding and head); bytes beyond the weights.

    mode: ``inference`` (no grad), ``train`` or ``train_ckpt`` (LoRA training, gradient checkpointing), or
    ``train_ckpt_offload`` (checkpointing with the trainer's `ActivationOffload`: what autograd keeps
    outside the blocks goes to the host).
    Returns ``peak`` (device bytes), ``kept`` (live on the device after the forward: what the backward
    needs), ``grads``, and ``host_peak`` (bytes of host copies).
    """
    training = mode != "inference"
    device = model.patch_embedding.weight.device
    inputs = _inputs(model.config, frames, grid, torch.complex64 if training else torch.complex128, device)
    tracker = TensorTracker([*model.parameters(), *model.buffers(), *inputs.values()], device)
    offloading = mode == "train_ckpt_offload"
    offload = ActivationOffload(None, device, min_bytes=OFFLOAD_MIN_BYTES) if offloading else None
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = flash_attention
    try:
        with torch.set_grad_enabled(training), tracker:
            with offload.hooks() if offload is not None else contextlib.nullcontext():
                text = model.text_embedding(inputs["context"])
                x = inputs["x"]
                for block in model.blocks:
                    if mode.startswith("train_ckpt"):
                        x = checkpoint(
                            block, x, inputs["time_projection"], text, inputs["rope"], use_reentrant=False
                        )
                    else:
                        x = block(x, inputs["time_projection"], text, inputs["rope"])
                out = model.head(x, inputs["time_embedding"])
                del x, text  # as when the model's forward returns: only what autograd saved stays
            kept = tracker.live
            if training:
                before = tracker.live
                out.float().square().mean().backward()
                del out
                grads = sum(
                    p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None
                )
                for parameter in model.parameters():
                    parameter.grad = None
                del before
            else:
                grads = 0
    finally:
        F.scaled_dot_product_attention = original
    return {
        "peak": float(tracker.peak),
        "kept": float(kept),
        "grads": float(grads),
        "host_peak": float(tracker.host_peak),
    }


def fit(tokens: list[int], values: list[float]) -> dict[str, float]:
    """Least squares ``a + b * L``; the largest relative residual over the points."""
    design = torch.tensor([[1.0, float(n)] for n in tokens], dtype=torch.float64)
    target = torch.tensor(values, dtype=torch.float64)
    solution = torch.linalg.lstsq(design, target[:, None]).solution[:, 0]
    predicted = design @ solution
    error = float(((predicted - target).abs() / target.abs().clamp_min(1)).max())
    return {"a": float(solution[0]), "b": float(solution[1]), "fit_error": error}


def at(term: dict[str, float], tokens: int) -> float:
    return term["a"] + term["b"] * tokens


def measure(size: ModelSize = SIZE_14B) -> dict[str, Any]:
    """Weights, LoRA sizes and the per-token activation terms of `size` (see the module docstring)."""
    tokens = [size.frames * h * w for h, w in FIT_GRIDS]
    results: dict[str, Any] = {"tokens": tokens, "weights": {}, "inference": {}, "train": {}, "lora": {}}
    check_tokens = size.frames * size.resolutions[size.check][0] * size.resolutions[size.check][1]
    for storage in STORAGES:
        one = build(1, storage, None, config=size.config(1))
        results["weights"][storage] = {
            "block": storage_bytes(one.blocks[0]),
            "non_block": storage_bytes(one) - storage_bytes(one.blocks[0]),
        }
        # Two blocks: the second one's input is a tensor the pass made (the first one's is given).
        two = build(2, storage, None, config=size.config(2))
        peaks = [run_blocks(two, grid, "inference", size.frames)["peak"] for grid in FIT_GRIDS]
        three = build(3, storage, None, config=size.config(3))
        three_peak = run_blocks(three, FIT_GRIDS[-1], "inference", size.frames)["peak"]
        term = fit(tokens, peaks)
        direct = run_blocks(two, size.resolutions[size.check], "inference", size.frames)["peak"]
        term["check_480p"] = at(term, check_tokens) / direct - 1
        term["three_blocks_over_two"] = three_peak / peaks[-1]
        results["inference"][storage] = term
    for rank in (512, 64):
        one = build(1, "bfloat16", rank, config=size.config(1))
        trainable = [p for p in one.blocks[0].parameters() if p.requires_grad]
        per_block = sum(p.numel() for p in trainable)
        results["lora"][rank] = {"params_per_block": per_block, "param_bytes_per_block": 4 * per_block}
    for storage in STORAGES:
        for rank in (512, 64):
            for mode, chunks in size.train_modes:
                key = f"{storage}/r{rank}/{mode}" + (f"+chunks{chunks}" if chunks > 1 else "")
                results["train"][key] = _train_terms(storage, rank, mode, tokens, chunks, size)
    if size.pipeline:
        results["pipeline"] = pipeline_terms(size)
    return results


def _train_terms(
    storage: str, rank: int, mode: str, tokens: list[int], chunks: int, size: ModelSize = SIZE_14B
) -> dict[str, Any]:
    """Per-block terms of one training setup from 1- and 2-block passes at the fit grids.

    ``kept_per_block``: device bytes one more block keeps after the forward; ``peak_extra``: the backward's
    peak on top of what the blocks keep (from the 1-block pass; with offload from the 2-block pass, which
    also holds the prefetched input of the block before); with offload, ``host_per_block`` and
    ``host_shared`` (host copies: one per block, plus the text embedding's and the head's saved tensors).
    """
    one = build(1, storage, rank, config=size.config(1), token_chunks=chunks)
    two = build(2, storage, rank, config=size.config(2), token_chunks=chunks)
    frames = size.frames
    passes = [(run_blocks(one, grid, mode, frames), run_blocks(two, grid, mode, frames)) for grid in FIT_GRIDS]
    per_block = fit(tokens, [second["kept"] - first["kept"] for first, second in passes])
    offload = mode == "train_ckpt_offload"
    if offload:
        extra_values = [second["peak"] - 2 * (second["kept"] - first["kept"]) for first, second in passes]
    else:
        extra_values = [first["peak"] - (second["kept"] - first["kept"]) for first, second in passes]
    extra = fit(tokens, extra_values)
    check = size.resolutions[size.check]
    direct_one = run_blocks(one, check, mode, frames)
    direct_two = run_blocks(two, check, mode, frames)
    l480 = frames * check[0] * check[1]
    projected_two = at(extra, l480) + 2 * at(per_block, l480)
    terms: dict[str, Any] = {
        "kept_per_block": per_block,
        "peak_extra": extra,
        "grad_bytes_one_block": passes[0][0]["grads"],
        "check_480p_two_blocks": projected_two / direct_two["peak"] - 1,
        "direct_480p_one_block_peak": direct_one["peak"],
    }
    if offload:
        host_per_block = fit(tokens, [second["host_peak"] - first["host_peak"] for first, second in passes])
        host_shared = fit(
            tokens, [2 * first["host_peak"] - second["host_peak"] for first, second in passes]
        )
        projected_host = at(host_shared, l480) + 2 * at(host_per_block, l480)
        terms["host_per_block"] = host_per_block
        terms["host_shared"] = host_shared
        terms["check_480p_two_blocks_host"] = projected_host / direct_two["host_peak"] - 1
    return terms


def _verdict(total: float, budgets: tuple[int, ...] = BUDGETS_GIB) -> str:
    return " ".join("yes" if total <= budget * 2**30 else "no" for budget in budgets)


def pipeline_terms(size: ModelSize) -> dict[str, Any]:
    """Bytes of the 5B pipeline's other models (`text_encoder_bytes`, the VAE) and its decodes (`decode_terms`)."""
    vae = wan22_vae()
    return {"text_encoder": text_encoder_bytes(), "vae": storage_bytes(vae), "decode": decode_terms(size, vae)}


def text_encoder_bytes() -> int:
    """Weights of umT5-XXL's encoder in bf16 (as ``--dtype auto`` loads it on a GPU), built on ``meta``."""
    from transformers import UMT5EncoderModel

    from pusa_fw_wan.text.checkpoint import umt5_config

    with torch.device("meta"):
        text = UMT5EncoderModel(umt5_config()).to(torch.bfloat16)
    return sum(t.numel() * t.element_size() for t in [*text.parameters(), *text.buffers()])


def wan22_vae() -> Any:
    """The Wan2.2 VAE with the release widths (encoder 160, decoder 256, 48 channels), fp32 on ``meta``."""
    from pusa_fw_wan.vae.wan22 import Wan22VAE

    with torch.device("meta"):
        return Wan22VAE(dim=160, z_dim=48, decoder_dim=256)


def decode_terms(size: ModelSize, vae: Any) -> dict[str, dict[str, Any]]:
    """Device bytes of the fp32 VAE decode at each of `size`'s clips, as `WanVAE.decode` runs it.

    The working bytes are the VAE's own traced per-cell estimate (`estimate_bytes`) for the pass it makes
    under its memory budget (`tile_plan`): untiled, or one tile's plus that tile's output and its weighted
    copy while blending; the fp32 video ``[3, T, H, W]`` is on the device either way.
    """
    decodes = {}
    for name, (frames, height, width) in size.clip.items():
        video = 3 * frames * height * width * 4
        untiled = vae.estimate_bytes(height, width)
        plan = vae.tile_plan(height, width)
        if plan is None:
            working, tiles = untiled, None
        else:
            factor = vae.spatial_factor
            tile_height, tile_width = plan.tile_height * factor, plan.tile_width * factor
            tile_video = 3 * frames * tile_height * tile_width * 4
            working = vae.estimate_bytes(tile_height, tile_width) + 2 * tile_video
            tiles = (len(plan.row_starts) * len(plan.col_starts), tile_height, tile_width)
        decodes[name] = {"untiled": untiled, "working": working, "video": video, "tiles": tiles,
                         "budget": vae.memory_budget_bytes}
    return decodes


def _inference_rows(results: dict[str, Any], size: ModelSize) -> list[dict[str, Any]]:
    """Inference rows: the DiT alone (14B), or the whole pipeline's peak phase (5B)."""
    rows = []
    pipeline = results.get("pipeline")
    for resolution, (height, width) in size.resolutions.items():
        tokens = size.frames * height * width
        for storage in STORAGES:
            weights = results["weights"][storage]
            activations = at(results["inference"][storage], tokens)
            placements = [("resident", size.num_blocks), ("block offload", OFFLOAD_BLOCKS)]
            if pipeline is not None:
                placements.insert(1, ("model offload", size.num_blocks))
            for placement, blocks_on_device in placements:
                dit = weights["non_block"] + blocks_on_device * weights["block"]
                row = {"what": "inference", "resolution": resolution, "base": storage, "setup": placement}
                if pipeline is None:
                    row["bytes"] = dit + activations + CUDA_CONTEXT
                else:  # --offload none / model / block: each model on the device only in its phase unless none
                    decode = pipeline["decode"][resolution]
                    others = pipeline["text_encoder"] + pipeline["vae"] if placement == "resident" else 0
                    resident_dit = dit if placement == "resident" else 0
                    phases = {
                        "text": resident_dit + others + (0 if others else pipeline["text_encoder"]),
                        "denoise": dit + others + activations,
                        "decode": resident_dit + others + (0 if others else pipeline["vae"]) + decode["working"]
                        + decode["video"],
                    }
                    row["setup"] = {"resident": "resident (DiT + umT5 + VAE)",
                                    "model offload": "model offload (one model at a time)",
                                    "block offload": "block offload (3 DiT blocks at a time)"}[placement]
                    peak_phase = max(phases, key=phases.__getitem__)
                    row.update(bytes=phases[peak_phase] + CUDA_CONTEXT, peak_phase=peak_phase,
                               phases={name: value + CUDA_CONTEXT for name, value in phases.items()})
                rows.append(row)
    return rows


def project(results: dict[str, Any], size: ModelSize = SIZE_14B) -> list[dict[str, Any]]:
    """Rows of the projection table (bytes and fits for 24 / 48 / 80 GiB)."""
    rows = _inference_rows(results, size)
    blocks = size.num_blocks
    dim = size.config(1).dim
    for resolution, (height, width) in size.resolutions.items():
        tokens = size.frames * height * width
        for storage in STORAGES:
            weights = results["weights"][storage]
            for rank in (512, 64):
                lora = results["lora"][rank]["param_bytes_per_block"] * blocks
                lora_state = lora * (1 + 1 + 2 + int(size.ema))  # params, grads, AdamW moments, EMA (fp32)
                for mode, setup, swapped, world in size.train_setups:
                    term = results["train"][f"{storage}/r{rank}/{mode}"]
                    offload = mode.startswith("train_ckpt_offload")
                    kept = blocks * at(term["kept_per_block"], tokens)
                    transient = at(term["peak_extra"], tokens)
                    if not offload:  # + block 0's residual input (fp32 [L, D]): given, so not measured
                        transient += tokens * dim * 4
                    host = swapped * weights["block"]
                    if offload:
                        host += blocks * at(term["host_per_block"], tokens)
                        host += at(term["host_shared"], tokens)
                    if world == 1:  # swap N: the other blocks resident, two swapped ones copied at a time
                        blocks_on_device = blocks - swapped + (2 if swapped else 0)
                        device_weights = weights["non_block"] + blocks_on_device * weights["block"]
                        state = lora_state
                    else:  # sharded weights and LoRA state, two blocks gathered at a time
                        device_weights = (weights["non_block"] + blocks * weights["block"]) / world
                        device_weights += 2 * weights["block"]
                        state = lora_state / world
                    rows.append(
                        {
                            "what": f"LoRA r{rank}",
                            "resolution": resolution,
                            "base": storage,
                            "setup": setup,
                            "bytes": device_weights + state + kept + transient + CUDA_CONTEXT,
                            "host_bytes": host,
                        }
                    )
    return rows


def print_report(results: dict[str, Any], rows: list[dict[str, Any]], size: ModelSize = SIZE_14B) -> None:
    blocks = size.num_blocks
    width = size.config(1)
    print(f"MEASURED {size.name} (tensor accounting, meta device, dim {width.dim}, {width.num_heads} heads, "
          f"ffn {width.ffn_dim}, {size.frames} latent frames, bf16 compute)")
    for storage, weights in results["weights"].items():
        print(
            f"  weights {storage:<14} per block {weights['block'] / GB:6.3f} GB, non-block "
            f"{weights['non_block'] / GB:6.3f} GB, {blocks} blocks + rest "
            f"{(blocks * weights['block'] + weights['non_block']) / GB:6.2f} GB"
        )
    for rank, lora in results["lora"].items():
        print(
            f"  LoRA r{rank}: {lora['params_per_block'] / 1e6:.1f} M fp32 params per block "
            f"({lora['params_per_block'] * blocks / 1e9:.3f} B for {blocks} blocks)"
        )
    print(f"  token counts fitted: {results['tokens']}")
    for storage, term in results["inference"].items():
        print(
            f"  inference peak, {storage:<14}: {term['a'] / GB:6.3f} GB + {term['b'] / 1e3:7.2f} kB/token "
            f"(fit error {term['fit_error']:.1e}, {size.check} direct vs fit {term['check_480p']:+.1e}, "
            f"3 blocks / 2 blocks peak {term['three_blocks_over_two']:.3f})"
        )
    for key, term in results["train"].items():
        kept, extra = term["kept_per_block"], term["peak_extra"]
        print(
            f"  train {key:<43} kept/block {kept['a'] / GB:6.3f} GB + {kept['b'] / 1e3:6.2f} kB/token "
            f"(fit err {kept['fit_error']:.1e}); peak extra {extra['a'] / GB:6.3f} GB + "
            f"{extra['b'] / 1e3:6.2f} kB/token (fit err {extra['fit_error']:.1e}); "
            f"{size.check} 2-block check {term['check_480p_two_blocks']:+.1e}"
        )
        if "host_per_block" in term:
            host, shared = term["host_per_block"], term["host_shared"]
            print(
                f"  {'':<49} host/block {host['a'] / GB:6.3f} GB + {host['b'] / 1e3:6.2f} kB/token "
                f"(fit err {host['fit_error']:.1e}); host shared {shared['a'] / GB:6.3f} GB + "
                f"{shared['b'] / 1e3:6.2f} kB/token; {size.check} 2-block host check "
                f"{term['check_480p_two_blocks_host']:+.1e}"
            )
    pipeline = results.get("pipeline")
    if pipeline is not None:
        print(f"  umT5-XXL encoder bf16 {pipeline['text_encoder'] / GB:.2f} GB; Wan2.2 VAE fp32 "
              f"{pipeline['vae'] / GB:.3f} GB")
        for name, decode in pipeline["decode"].items():
            frames, height, width_px = size.clip[name]
            tiles = ("untiled" if decode["tiles"] is None else
                     f"tiled: {decode['tiles'][0]} tiles of {decode['tiles'][1]}x{decode['tiles'][2]}")
            print(f"  VAE decode {name} x {frames} ({height}x{width_px}): untiled {decode['untiled'] / 2**30:.1f} "
                  f"GiB working; {tiles} under the {decode['budget'] / 2**30:.0f} GiB budget: "
                  f"{decode['working'] / 2**30:.1f} GiB working + {decode['video'] / 2**30:.2f} GiB fp32 video")
    frames = 4 * (size.frames - 1) + 1
    ema = "LoRA with AdamW + fp32 EMA" if size.ema else "LoRA with AdamW, no EMA (the default)"
    print(f"\nPROJECTED {size.name} ({blocks} blocks, {frames} frames; {ema}; + 1 GiB CUDA context; fits 24 / 48 "
          "/ 80 GiB; host: swapped")
    print("block weights + offloaded activations" + ("; inference: peak phase of text / denoise / decode)"
                                                       if pipeline is not None else ")"))
    print(f"{'what':<10}{'res':>6}  {'base':<14}{'setup':<41}{'GiB':>7}{'host GiB':>10}  fits")
    for row in rows:
        host = f"{row['host_bytes'] / 2**30:>10.1f}" if "host_bytes" in row else f"{'':>10}"
        phase = f"  ({row['peak_phase']})" if "peak_phase" in row else ""
        print(
            f"{row['what']:<10}{row['resolution']:>6}  {row['base']:<14}{row['setup']:<41}"
            f"{row['bytes'] / 2**30:>7.1f}{host}  {_verdict(row['bytes'])}{phase}"
        )
    if size is SIZE_5B:
        print("\nGOALS (TI2V-5B, one GPU)")
        lines = goals_5b(rows)
    else:
        print("\nGOALS (480p x 81, one GPU)")
        lines = goals(rows)
    for goal in lines:
        print(f"  {goal}")


def goals(rows: list[dict[str, Any]]) -> list[str]:
    """Issue 15's training goals against the projection: met, or missed by how much (best setup)."""
    lines = []
    for rank, budget, bases, needs_swap in ((512, 80, STORAGES, False), (64, 24, ("float8_e4m3fn",), True)):
        candidates = [
            row for row in rows
            if row["what"] == f"LoRA r{rank}" and row["resolution"] == "480p" and row["base"] in bases
            and "FSDP2" not in row["setup"] and (not needs_swap or "swap" in row["setup"])
        ]
        best = min(candidates, key=lambda row: row["bytes"])
        gib = best["bytes"] / 2**30
        verdict = "met" if gib <= budget else f"missed by {gib - budget:.1f} GiB"
        lines.append(
            f"LoRA r{rank} on one {budget} GB GPU: {verdict} (best: {best['base']}, {best['setup']}: "
            f"{gib:.1f} GiB device, {best['host_bytes'] / 2**30:.1f} GiB host)"
        )
    return lines


def goals_5b(rows: list[dict[str, Any]]) -> list[str]:
    """TI2V-5B against 24 and 48 GB: inference at 720p x 121 and the VTA LoRA (r 512 and r 64) at 720p x 121
    and 480p x 121; per goal the first setup in table order that fits (the fewest options), or the smallest
    and how much it misses by."""
    lines = []
    for what, resolution in (("inference", "720p"), ("LoRA r512", "720p"), ("LoRA r64", "720p"),
                             ("LoRA r512", "480p"), ("LoRA r64", "480p")):
        candidates = [row for row in rows if row["what"] == what and row["resolution"] == resolution]
        for budget in (24, 48):
            fitting = [row for row in candidates if row["bytes"] <= budget * 2**30]
            smallest = min(candidates, key=lambda row: row["bytes"])
            chosen = fitting[0] if fitting else smallest
            gib = chosen["bytes"] / 2**30
            verdict = "fits" if fitting else f"missed by {gib - budget:.1f} GiB"
            host = f", {chosen['host_bytes'] / 2**30:.1f} GiB host" if "host_bytes" in chosen else ""
            least = ("" if smallest is chosen else
                     f" (least: {smallest['base']}, {smallest['setup']}: {smallest['bytes'] / 2**30:.1f} GiB)")
            lines.append(f"{what} {resolution} x 121 on {budget} GB: {verdict} with {chosen['base']}, "
                         f"{chosen['setup']}: {gib:.1f} GiB device{host}{least}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=(*SIZES, "all"), default="all", help="which model to project")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    sizes = list(SIZES.values()) if args.model == "all" else [SIZES[args.model]]
    report = {}
    for number, size in enumerate(sizes):
        results = measure(size)
        rows = project(results, size)
        report[size.name] = {"measured": results, "projected": rows}
        if not args.json:
            if number:
                print()
            print_report(results, rows, size)
    if args.json:
        print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
