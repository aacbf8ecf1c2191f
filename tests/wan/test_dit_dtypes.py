"""Mixed precision: bf16 linears with an fp32 residual stream, time path and head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from pusa_fw_wan import WanDiT


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0).item()


def test_set_compute_dtype_keeps_the_time_path_in_float32(make_random_dit) -> None:
    model = make_random_dit(seed=21)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, 3, 4, 6, generator=generator)
    context = torch.randn(1, 5, 64, generator=generator)
    sigmas = torch.tensor([[0.95, 0.5, 0.05]])
    with torch.no_grad():
        reference = model.velocity(latents, sigmas, context)
        model.set_compute_dtype(torch.bfloat16)
        mixed = model.velocity(latents, sigmas, context)
    assert model.compute_dtype == torch.bfloat16
    assert model.blocks[0].cross_attn.v.weight.dtype == torch.bfloat16
    assert model.time_projection[1].weight.dtype == torch.float32
    assert model.blocks[1].modulation.dtype == torch.float32
    assert mixed.dtype == torch.float32
    assert not torch.equal(mixed, reference)
    assert _cosine(mixed, reference) >= 0.999, _cosine(mixed, reference)


@pytest.mark.gpu
def test_bf16_on_cuda_tracks_the_fp32_reference(wan_reference_dir: Path) -> None:
    case = load_file(wan_reference_dir / "dit" / "dit_vectorized_io.safetensors")
    model = WanDiT.from_pretrained(wan_reference_dir / "dit" / "single", dtype=torch.bfloat16, device="cuda")
    with torch.no_grad():
        for index, frame_timesteps in enumerate(case["frame_timesteps"]):
            out = model.forward_timesteps(
                case["x"][None].cuda(), frame_timesteps[None].cuda(), case["context"][None].cuda()
            )
            assert out.device.type == "cuda"
            similarity = _cosine(out[0].cpu(), case["out"][index])
            assert similarity >= 0.999, f"row {index}: cosine {similarity}"
