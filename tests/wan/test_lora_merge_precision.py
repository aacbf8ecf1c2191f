"""Low-precision linears: the merged-LoRA weight built in the compute dtype, the fp8 scale kept in float32,
and the autocast path that skips the float32 round trip (review F11)."""

from __future__ import annotations

import pytest
import torch

from pusa_fw_wan.dit.fp8 import dequantize, quantize_fp8
from pusa_fw_wan.dit.low_precision import LowPrecisionLinear

BF16_UNIT = 2.0**-8  # bf16 unit roundoff: 8 significant bits


def fp8_layer(out_features: int, in_features: int, compute: torch.dtype, seed: int = 0) -> LowPrecisionLinear:
    generator = torch.Generator().manual_seed(seed)
    layer = LowPrecisionLinear(in_features, out_features, storage_dtype=torch.float8_e4m3fn,
                               compute_dtype=compute)
    layer.set_weight(torch.randn(out_features, in_features, generator=generator) * 0.02)
    layer.bias = torch.nn.Parameter(torch.randn(out_features, generator=generator).to(compute))
    return layer


def test_bf16_merge_of_a_rank_64_lora_stays_within_one_rounding_of_the_fp32_merge() -> None:
    """512 x 512 fp8 layer + rank-64 LoRA (bf16 factors, as LoRA files ship them), merged in bf16 with
    float32 accumulation, against the float32 merge rounded once to bf16.

    Both end in bf16, so they can differ by the extra rounding of the bf16 path (W rounded before the add):
    at most one bf16 unit of the merged weight's magnitude plus one of W's, i.e. <= 2 * 2^-8 * max|W'|.
    Measured: max-abs 4.6e-4 = 1.0 unit of 2^-8 * max|W'| (0.39 % of max|W'| = 0.118); relative Frobenius
    2.1e-3, against 1.7e-3 for the float32 merge rounded once to bf16 (the best a bf16 weight can do).
    """
    generator = torch.Generator().manual_seed(1)
    layer = fp8_layer(512, 512, torch.bfloat16)
    down = (torch.randn(64, 512, generator=generator) * 0.05).to(torch.bfloat16)
    up = (torch.randn(512, 64, generator=generator) * 0.05).to(torch.bfloat16)
    layer.merged_deltas.append((down, up, None, 0.75))
    fp32_merge = dequantize(layer.weight, layer.scale_weight, torch.float32).addmm_(up.float(), down.float(),
                                                                                      alpha=0.75)
    got = layer.dequantized_weight()
    assert got.dtype == torch.bfloat16
    error = (got.float() - fp32_merge).abs().max()
    bound = 2 * BF16_UNIT * fp32_merge.abs().max()
    assert error <= bound, (error, bound)
    relative = (got.float() - fp32_merge).norm() / fp32_merge.norm()
    assert relative <= 2 * BF16_UNIT, relative
    # one extra rounding at most doubles the error of the best bf16 weight (the fp32 merge rounded once)
    best = (fp32_merge.to(torch.bfloat16).float() - fp32_merge).norm() / fp32_merge.norm()
    assert relative <= 2 * best, (relative, best)
    # a float32 compute dtype keeps the exact float32 merge
    layer.compute_dtype = torch.float32
    assert torch.equal(layer.dequantized_weight(), fp32_merge)


def test_a_cached_merge_is_built_once_and_equals_the_per_forward_merge(monkeypatch) -> None:
    import pusa_fw_wan.dit.low_precision as low_precision

    layer = fp8_layer(64, 32, torch.bfloat16)
    generator = torch.Generator().manual_seed(2)
    down, up = torch.randn(4, 32, generator=generator), torch.randn(64, 4, generator=generator)
    layer.merged_deltas.append((down, up, None, 0.5))
    x = torch.randn(3, 32, generator=generator)
    with torch.no_grad():
        per_forward = layer(x)
        layer.cache_merged_weight()
        calls = []
        monkeypatch.setattr(low_precision, "dequantize", lambda *args: calls.append(args))
        assert torch.equal(layer(x), per_forward) and calls == []  # no dequantisation, no merge


@pytest.mark.parametrize("storage", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_fp8_dequantisation_to_bf16_keeps_the_scale_in_float32(storage: torch.dtype) -> None:
    """One rounding of the float32 product; before, the scale was rounded to bf16 first (a gain error of
    up to 2^-8 on the whole tensor or row)."""
    generator = torch.Generator().manual_seed(3)
    stored, _ = quantize_fp8(torch.randn(64, 48, generator=generator), storage)
    scales = [torch.tensor(0.0123457), torch.rand(64, 1, generator=generator) * 0.01 + 1e-4]
    for scale in scales:
        for dtype in (torch.bfloat16, torch.float16):
            got = dequantize(stored, scale, dtype)
            assert torch.equal(got, (stored.float() * scale).to(dtype))
            assert torch.equal(dequantize(stored, scale, torch.float32), stored.float() * scale)


@pytest.mark.parametrize("storage", [torch.bfloat16, torch.float8_e4m3fn])
def test_autocast_casts_straight_to_bf16_and_gives_the_same_bits(storage: torch.dtype, monkeypatch) -> None:
    """Under CPU bf16 autocast a float32-compute layer dequantises its weight to bf16 directly (no float32
    copy of the weight or input) and its output equals the old float32-then-autocast path bit for bit."""
    import pusa_fw_wan.dit.low_precision as low_precision

    generator = torch.Generator().manual_seed(4)
    layer = LowPrecisionLinear(48, 40, storage_dtype=storage, compute_dtype=torch.float32)
    layer.set_weight(torch.randn(40, 48, generator=generator) * 0.1)
    layer.bias = torch.nn.Parameter(torch.randn(40, generator=generator))
    x = torch.randn(2, 5, 48, generator=generator)
    weight32 = dequantize(layer.weight, layer.scale_weight, torch.float32)
    seen: list[torch.dtype] = []
    original = low_precision.dequantize

    def spy(stored, scale, dtype):
        seen.append(dtype)
        return original(stored, scale, dtype)

    monkeypatch.setattr(low_precision, "dequantize", spy)
    for grad in (False, True):
        with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16):
            old = torch.nn.functional.linear(x, weight32, layer.bias)  # the former float32 inputs
            new = layer(x.requires_grad_(grad))
        assert new.dtype == torch.bfloat16 and torch.equal(new, old)
    assert seen == [torch.bfloat16, torch.bfloat16]
    with torch.no_grad():  # outside autocast: the compute dtype as before
        assert layer(x).dtype == torch.float32 and seen[-1] == torch.float32
