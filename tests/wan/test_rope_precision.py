"""Inference RoPE in float32 (``WanDiT.rope_precision``) against the float64 reference, and the single cast
of the self-attention input."""

from __future__ import annotations

import pytest
import torch

from pusa_fw.errors import InputError

from pusa_fw_wan.dit.rope import apply_rope, cached_rope_frequencies

FP32_UNIT = 2.0**-24


def test_float32_rope_on_a_480p_81_frame_grid_is_within_a_few_float32_ulps_of_float64() -> None:
    """21 x 30 x 52 = 32760 tokens, head_dim 128 (Wan 480p x 81 frames after patchify).

    Per channel pair the float32 path rounds the table (cos, sin) once and the complex product a few times,
    each by <= 2^-24 relative; the float64 path rounds only its result to float32. So the difference is a
    few units 2^-24 of the pair's magnitude |(a, b)|: bound 8 units. Measured: 2.56 units max, 0.28 on
    average; max-abs 4.8e-7 on unit-variance inputs, relative Frobenius 4.7e-8.
    """
    grid, head_dim = (21, 30, 52), 128
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, grid[0] * grid[1] * grid[2], 1, head_dim, generator=generator)
    reference = apply_rope(x, cached_rope_frequencies(grid, head_dim, dtype=torch.complex128))
    fast = apply_rope(x, cached_rope_frequencies(grid, head_dim, dtype=torch.complex64))
    magnitude = x.reshape(*x.shape[:-1], -1, 2).norm(dim=-1).repeat_interleave(2, dim=-1)
    units = ((fast - reference).abs() / (magnitude * FP32_UNIT)).max()
    assert fast.dtype == reference.dtype == torch.float32
    assert units <= 8, units
    assert units > 0  # the two precisions are really different paths


def test_the_model_option_switches_the_table_and_rejects_unknown_values(monkeypatch) -> None:
    import pusa_fw_wan.dit.model as model_module
    from pusa_fw_wan import WanConfig, WanDiT

    torch.manual_seed(0)
    config = WanConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=1, text_dim=64, freq_dim=256)
    model = WanDiT(config).eval()
    assert model.rope_precision == "float64"
    tables: list[torch.dtype] = []
    original = model_module.cached_rope_frequencies

    def spy(*args):
        tables.append(args[4])
        return original(*args)

    monkeypatch.setattr(model_module, "cached_rope_frequencies", spy)
    inputs = (torch.randn(1, 16, 2, 4, 4), torch.tensor([[0.3, 0.9]]), torch.randn(1, 5, 64))
    with torch.no_grad():
        reference = model(*inputs)
        model.rope_precision = "float32"
        fast = model(*inputs)
    assert tables == [torch.complex128, torch.complex64]
    assert 0 < float((fast - reference).abs().max()) <= 1e-5 * float(reference.abs().max())
    with pytest.raises(InputError, match="rope_precision 'float16' is unknown; use one of float64, float32"):
        model.rope_precision = "float16"


def test_self_attention_casts_its_input_once_with_the_same_result(monkeypatch) -> None:
    """bf16 attention on a float32 residual: one cast for q, k and v instead of three, bit-identical."""
    from pusa_fw_wan.dit.attention import SelfAttention

    torch.manual_seed(0)
    attention = SelfAttention(256, 2, True, 1e-6).to(torch.bfloat16)
    x = torch.randn(1, 12, 256)
    rope = cached_rope_frequencies((1, 3, 4), 128)
    with torch.no_grad():
        expected = attention._attend(
            *(apply_rope(t, rope) if i < 2 else t for i, t in enumerate(
                [norm(lin(x.to(torch.bfloat16))).reshape(1, 12, 2, 128) for norm, lin in (
                    (attention.norm_q, attention.q), (attention.norm_k, attention.k),
                    (torch.nn.Identity(), attention.v))])))
    casts = []
    original = torch.Tensor.to

    def counting(self, *args, **kwargs):
        if self is x and args and args[0] == torch.bfloat16:
            casts.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", counting)
    with torch.no_grad():
        got = attention(x, rope)
    monkeypatch.undo()
    assert len(casts) == 1
    assert torch.equal(got, expected)
