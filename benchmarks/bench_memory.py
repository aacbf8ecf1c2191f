"""The device-memory model of Wan2.1 14B in pusa-fw: measured at the 14B width on 1-2 blocks, projected to 40.

Measured here (no GPU needed, and no compute): the real block code of `WanDiT` at the 14B width (dim 5120,
40 heads, ffn 13824, text dim 4096) runs on PyTorch's ``meta`` device under a dispatcher-level tensor
tracker, which adds up every storage an op creates and frees, with its real shape and dtype (compute dtype
bf16, as on a GPU). Attention is routed to PyTorch's flash kernel
(``_scaled_dot_product_flash_attention_for_cpu``: O(L) memory, saves out + logsumexp), standing in for the
CUDA flash/cuDNN kernels. From 1-3 real blocks at four reduced token counts (21 frames x 8x8 .. 20x32
patches) it measures

- weight bytes per block per storage dtype (bf16, fp8 e4m3fn) and of the non-block modules;
- activation bytes for inference (peak of one block pass), and for LoRA training with and without gradient
  checkpointing (bytes kept per block after the forward, and the peak on top of them in the backward);
- LoRA r = 512 and r = 64 (Pusa targets q, k, v, o of both attentions + both FFN layers, fp32 factors):
  trainable bytes and the gradients the backward makes; AdamW (2 x fp32) and EMA (fp32) are counted.

Each per-token term is fitted as ``a + b * L`` by least squares (the fit error is printed) and checked
against a direct measurement at the 480p token count. Then it projects 40 blocks at 480p and 720p x 81 frames
(L = 32,760 / 75,600) for inference (bf16 / fp8, resident / block offload) and Pusa LoRA training (r 512 / 64,
bf16 / fp8 base, checkpointing, block swap N, 1 GPU and 8-GPU FSDP2) against 24, 48 and 80 GB. Projections
add 1 GiB for the CUDA context and do not model allocator fragmentation; `benchmarks/gpu_check.py` compares
them with a real peak when a GPU is at hand.

    python benchmarks/bench_memory.py [--json]
"""

from __future__ import annotations

import argparse
import json
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.checkpoint import checkpoint

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
NUM_BLOCKS = 40


def config_14b(num_layers: int) -> WanConfig:
    return WanConfig(dim=5120, ffn_dim=13824, num_heads=40, text_dim=4096, num_layers=num_layers)


class TensorTracker(TorchDispatchMode):
    """Live and peak bytes of the storages ops create (keyed by storage identity: works on ``meta``)."""

    def __init__(self, existing: list[torch.Tensor]) -> None:
        super().__init__()
        # Storages that exist already (weights, inputs) are not counted, also when an op returns a view
        # of them (a transposed weight).
        self.seen: set[int] = {tensor.untyped_storage()._cdata for tensor in existing}
        self.live = 0
        self.peak = 0

    def _count(self, storage: torch.UntypedStorage) -> None:
        key = storage._cdata
        if key in self.seen or storage.nbytes() == 0:
            return
        self.seen.add(key)
        self.live += storage.nbytes()
        weakref.finalize(storage, self._release, key, storage.nbytes())

    def _release(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self.seen.discard(key)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
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
) -> WanDiT:
    """A meta-device model (14B width unless `config`), bf16 compute, large linears in `weights_dtype`,
    optional fp32 LoRA on the Pusa targets. ``device="cpu"`` builds a real one (to check the accounting)."""
    with torch.device(device):
        model = WanDiT(config_14b(num_layers) if config is None else config)
    model.set_compute_dtype(torch.bfloat16).set_weights_dtype(weights_dtype)
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

    mode: ``inference`` (no grad), ``train`` or ``train_ckpt`` (LoRA training, gradient checkpointing).
    Returns ``peak`` (bytes), ``kept`` (live after the forward: what the backward needs) and ``grads``.
    """
    training = mode != "inference"
    device = model.patch_embedding.weight.device
    inputs = _inputs(model.config, frames, grid, torch.complex64 if training else torch.complex128, device)
    tracker = TensorTracker([*model.parameters(), *model.buffers(), *inputs.values()])
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = flash_attention
    try:
        with torch.set_grad_enabled(training), tracker:
            text = model.text_embedding(inputs["context"])
            x = inputs["x"]
            for block in model.blocks:
                if mode == "train_ckpt":
                    x = checkpoint(
                        block, x, inputs["time_projection"], text, inputs["rope"], use_reentrant=False
                    )
                else:
                    x = block(x, inputs["time_projection"], text, inputs["rope"])
            out = model.head(x, inputs["time_embedding"])
            kept = tracker.live
            if training:
                before = tracker.live
                out.float().square().mean().backward()
                del out, x, text
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
    return {"peak": float(tracker.peak), "kept": float(kept), "grads": float(grads)}


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


def measure() -> dict[str, Any]:
    tokens = [FRAMES * h * w for h, w in FIT_GRIDS]
    results: dict[str, Any] = {"tokens": tokens, "weights": {}, "inference": {}, "train": {}, "lora": {}}
    for storage in STORAGES:
        one = build(1, storage, None)
        results["weights"][storage] = {
            "block": storage_bytes(one.blocks[0]),
            "non_block": storage_bytes(one) - storage_bytes(one.blocks[0]),
        }
        # Two blocks: the second one's input is a tensor the pass made (the first one's is given).
        two = build(2, storage, None)
        peaks = [run_blocks(two, grid, "inference")["peak"] for grid in FIT_GRIDS]
        three_peak = run_blocks(build(3, storage, None), FIT_GRIDS[-1], "inference")["peak"]
        term = fit(tokens, peaks)
        direct = run_blocks(two, RESOLUTIONS["480p"], "inference")["peak"]
        term["check_480p"] = at(term, FRAMES * 30 * 52) / direct - 1
        term["three_blocks_over_two"] = three_peak / peaks[-1]
        results["inference"][storage] = term
    for rank in (512, 64):
        one = build(1, "bfloat16", rank)
        trainable = [p for p in one.blocks[0].parameters() if p.requires_grad]
        per_block = sum(p.numel() for p in trainable)
        results["lora"][rank] = {"params_per_block": per_block, "param_bytes_per_block": 4 * per_block}
    for storage in STORAGES:
        for rank in (512, 64):
            for mode in ("train", "train_ckpt"):
                one, two = build(1, storage, rank), build(2, storage, rank)
                kept_one, kept_two, peak_one, grads = [], [], [], 0.0
                for grid in FIT_GRIDS:
                    first = run_blocks(one, grid, mode)
                    second = run_blocks(two, grid, mode)
                    kept_one.append(first["kept"])
                    kept_two.append(second["kept"])
                    peak_one.append(first["peak"])
                    grads = first["grads"]
                per_block = fit(tokens, [b - a for a, b in zip(kept_one, kept_two)])
                extra = fit(tokens, [p - (b - a) for p, a, b in zip(peak_one, kept_one, kept_two)])
                direct_one = run_blocks(one, RESOLUTIONS["480p"], mode)
                direct_two = run_blocks(two, RESOLUTIONS["480p"], mode)
                l480 = FRAMES * 30 * 52
                projected_two = at(extra, l480) + 2 * at(per_block, l480)
                results["train"][f"{storage}/r{rank}/{mode}"] = {
                    "kept_per_block": per_block,
                    "peak_extra": extra,
                    "grad_bytes_one_block": grads,
                    "check_480p_two_blocks": projected_two / direct_two["peak"] - 1,
                    "direct_480p_one_block_peak": direct_one["peak"],
                }
    return results


def _verdict(total: float) -> str:
    return " ".join("yes" if total <= budget * 2**30 else "no" for budget in (24, 48, 80))


def project(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the projection table (bytes and fits for 24 / 48 / 80 GiB)."""
    rows = []
    for resolution, (height, width) in RESOLUTIONS.items():
        tokens = FRAMES * height * width
        for storage in STORAGES:
            weights = results["weights"][storage]
            activations = at(results["inference"][storage], tokens)
            for placement, blocks_on_device in (("resident", NUM_BLOCKS), ("block offload", 2)):
                total = (
                    weights["non_block"] + blocks_on_device * weights["block"] + activations + CUDA_CONTEXT
                )
                rows.append(
                    {
                        "what": "inference",
                        "resolution": resolution,
                        "base": storage,
                        "setup": placement,
                        "bytes": total,
                    }
                )
        for storage in STORAGES:
            weights = results["weights"][storage]
            for rank in (512, 64):
                lora = results["lora"][rank]["param_bytes_per_block"] * NUM_BLOCKS
                lora_state = lora * (1 + 1 + 2 + 1)  # params, grads, AdamW moments, EMA (fp32)
                for mode in ("train_ckpt", "train"):
                    term = results["train"][f"{storage}/r{rank}/{mode}"]
                    kept = NUM_BLOCKS * at(term["kept_per_block"], tokens)
                    # + the residual input of block 0 (fp32 [L, D]): given, so not in the 1-block measurement
                    transient = at(term["peak_extra"], tokens) + tokens * 5120 * 4
                    label = "ckpt" if mode == "train_ckpt" else "no ckpt"
                    setups = [(f"{label}, 1 GPU", NUM_BLOCKS, 1, kept)]
                    if mode == "train_ckpt":
                        setups += [
                            (f"{label}, block swap {n}", NUM_BLOCKS - n + 2, 1, kept) for n in (20, 38)
                        ]
                        setups += [(f"{label} inputs on host*, block swap 38", 4, 1, 0.0)]
                        setups += [(f"{label}, 8-GPU FSDP2", None, 8, kept)]
                    for setup, blocks_on_device, world, kept_here in setups:
                        activations = kept_here + transient
                        if world == 1:
                            device_weights = weights["non_block"] + blocks_on_device * weights["block"]
                            state = lora_state
                        else:  # sharded weights and LoRA state, two blocks gathered at a time
                            device_weights = (weights["non_block"] + NUM_BLOCKS * weights["block"]) / world
                            device_weights += 2 * weights["block"]
                            state = lora_state / world
                        total = device_weights + state + activations + CUDA_CONTEXT
                        rows.append(
                            {
                                "what": f"LoRA r{rank}",
                                "resolution": resolution,
                                "base": storage,
                                "setup": setup,
                                "bytes": total,
                            }
                        )
    return rows


def print_report(results: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    print("MEASURED (tensor accounting, meta device, 14B width, bf16 compute)")
    for storage, weights in results["weights"].items():
        print(
            f"  weights {storage:<14} per block {weights['block'] / GB:6.3f} GB, non-block "
            f"{weights['non_block'] / GB:6.3f} GB, 40 blocks + rest "
            f"{(40 * weights['block'] + weights['non_block']) / GB:6.2f} GB"
        )
    for rank, lora in results["lora"].items():
        print(
            f"  LoRA r{rank}: {lora['params_per_block'] / 1e6:.1f} M fp32 params per block "
            f"({lora['params_per_block'] * 40 / 1e9:.3f} B for 40 blocks)"
        )
    print(f"  token counts fitted: {results['tokens']}")
    for storage, term in results["inference"].items():
        print(
            f"  inference peak, {storage:<14}: {term['a'] / GB:6.3f} GB + {term['b'] / 1e3:7.2f} kB/token "
            f"(fit error {term['fit_error']:.1e}, 480p direct vs fit {term['check_480p']:+.1e}, "
            f"3 blocks / 2 blocks peak {term['three_blocks_over_two']:.3f})"
        )
    for key, term in results["train"].items():
        kept, extra = term["kept_per_block"], term["peak_extra"]
        print(
            f"  train {key:<30} kept/block {kept['a'] / GB:6.3f} GB + {kept['b'] / 1e3:6.2f} kB/token "
            f"(fit err {kept['fit_error']:.1e}); peak extra {extra['a'] / GB:6.3f} GB + "
            f"{extra['b'] / 1e3:6.2f} kB/token (fit err {extra['fit_error']:.1e}); "
            f"480p 2-block check {term['check_480p_two_blocks']:+.1e}"
        )
    print("\nPROJECTED (40 blocks, 81 frames; + 1 GiB CUDA context; fits 24 / 48 / 80 GiB)")
    print(f"{'what':<10}{'res':>6}  {'base':<14}{'setup':<38}{'GiB':>8}  fits")
    for row in rows:
        print(
            f"{row['what']:<10}{row['resolution']:>6}  {row['base']:<14}{row['setup']:<38}"
            f"{row['bytes'] / 2**30:>8.1f}  {_verdict(row['bytes'])}"
        )
    print(
        "* not in pusa-fw yet: the checkpointed block inputs kept in host memory "
        "(diffusion-pipe's 'unsloth');"
        " block swap in training is issue 15 item 6 (not implemented yet)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    results = measure()
    rows = project(results)
    if args.json:
        print(json.dumps({"measured": results, "projected": rows}, default=str))
        return
    print_report(results, rows)


if __name__ == "__main__":
    main()
