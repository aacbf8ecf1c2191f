"""Parity of `WanDiT` with the official Wan2.1 / Wan2.2 / Pusa outputs stored in the fixtures (fp32).

The fixture README puts the fp32 floor at 1.4e-6 .. 2.2e-6 (two official code paths already disagree by
that much); we require 5e-6 on the outputs (hard limit in the brief: 1e-5).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pusa_fw_wan import WanDiT

OUTPUT_TOLERANCE = 5e-6


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@pytest.fixture(scope="module")
def scalar_case(wan_reference_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(wan_reference_dir / "dit" / "dit_t2v_io.safetensors")


@pytest.fixture(scope="module")
def vector_case(wan_reference_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(wan_reference_dir / "dit" / "dit_vectorized_io.safetensors")


@pytest.fixture(scope="module", params=["single", "sharded"])
def layout_dit(request: pytest.FixtureRequest, dit_layout_dirs: dict[str, Path]) -> WanDiT:
    return WanDiT.from_pretrained(dit_layout_dirs[request.param])


def test_scalar_timesteps_match_wan21(layout_dit: WanDiT, scalar_case: dict[str, torch.Tensor]) -> None:
    errors = []
    with torch.no_grad():
        for index, timestep in enumerate(scalar_case["timesteps"]):
            out = layout_dit.forward_timesteps(
                scalar_case["x"][None], timestep[None], scalar_case["context"][None]
            )
            assert out.shape == (1, 16, 3, 6, 10)
            errors.append(_max_abs(out[0], scalar_case["out"][index]))
    assert max(errors) <= OUTPUT_TOLERANCE, f"max-abs errors per timestep vs Wan2.1: {errors}"


def test_per_frame_timesteps_match_wan22_and_pusa(
    layout_dit: WanDiT, vector_case: dict[str, torch.Tensor]
) -> None:
    errors_wan22, errors_pusa = [], []
    with torch.no_grad():
        for index, frame_timesteps in enumerate(vector_case["frame_timesteps"]):
            out = layout_dit.forward_timesteps(
                vector_case["x"][None], frame_timesteps[None], vector_case["context"][None]
            )
            errors_wan22.append(_max_abs(out[0], vector_case["out"][index]))
            errors_pusa.append(_max_abs(out[0], vector_case["out_pusa"][index]))
    assert max(errors_wan22) <= OUTPUT_TOLERANCE, f"max-abs errors vs Wan2.2 per-token path: {errors_wan22}"
    assert max(errors_pusa) <= OUTPUT_TOLERANCE, f"max-abs errors vs Pusa WanModelPusa: {errors_pusa}"


def test_velocity_api_takes_sigmas(reference_dit: WanDiT, vector_case: dict[str, torch.Tensor]) -> None:
    """`velocity` forms 1000 * sigma in float64, so float64 sigmas (what plans hold) give the official
    timesteps exactly: the same output as `forward_timesteps`, at the fp32 floor of the reference (~2e-6).
    A float32 sigma is up to ~3e-5 off on the 0..1000 scale, which moves the output by ~1e-5."""
    errors_float64, errors_float32 = [], []
    with torch.no_grad():
        for index, frame_timesteps in enumerate(vector_case["frame_timesteps"]):
            sigmas = (frame_timesteps.double() / 1000.0)[None]
            via_sigma = reference_dit.velocity(vector_case["x"][None], sigmas, vector_case["context"][None])
            via_timestep = reference_dit.forward_timesteps(
                vector_case["x"][None], frame_timesteps[None], vector_case["context"][None]
            )
            assert _max_abs(via_sigma, via_timestep) <= 1e-6
            errors_float64.append(_max_abs(via_sigma[0], vector_case["out"][index]))
            fp32_sigmas = (frame_timesteps / 1000.0)[None]
            called = reference_dit(vector_case["x"][None], fp32_sigmas, vector_case["context"][None])
            errors_float32.append(_max_abs(called[0], vector_case["out"][index]))
    assert max(errors_float64) <= OUTPUT_TOLERANCE, f"velocity(float64 sigmas) vs Wan2.2: {errors_float64}"
    assert max(errors_float32) <= 5e-5, f"velocity(float32 sigmas) vs Wan2.2: {errors_float32}"
    assert max(errors_float64) < max(errors_float32)


class _Recorder:
    """Wraps a backbone and keeps what the sampling loop passed to it and what came back."""

    def __init__(self, backbone: WanDiT) -> None:
        self.backbone, self.calls = backbone, []

    def velocity(self, latents: torch.Tensor, sigmas: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        out = self.backbone.velocity(latents, sigmas, context)
        self.calls.append((latents.clone(), sigmas.clone(), out.clone()))
        return out


def test_plans_deliver_official_timesteps_to_the_dit(
    reference_dit: WanDiT, vector_case: dict[str, torch.Tensor]
) -> None:
    """Through a plan and the sampling loop, the DiT sees float64 sigmas and matches the official outputs
    at the exact-timestep figure (a float32 plan would be ~1.5e-5 off)."""
    from pusa_fw.plan import Plan
    from pusa_fw.sampling import sample

    x, context = vector_case["x"][None], vector_case["context"][None]
    for index, frame_timesteps in enumerate(vector_case["frame_timesteps"]):
        levels = frame_timesteps.double() / 1000.0
        frames = levels.shape[0]
        plan = Plan(
            sigmas=torch.stack([levels, torch.zeros(frames, dtype=torch.float64)]),
            input_sigmas=levels[None],
            windows=torch.tensor([[0, frames]]),
            held=levels == 0,  # a frame at timestep 0 is a clean, given frame
        )
        recorder = _Recorder(reference_dit)
        with torch.no_grad():
            sample(recorder, plan, x.clone(), sampler="euler", source=x.clone(), context=context)
        ((latents, sigmas, out),) = recorder.calls
        assert torch.equal(latents, x) and sigmas.dtype == torch.float64
        assert torch.equal(sigmas[0], levels)
        error = _max_abs(out[0], vector_case["out"][index])
        assert error <= OUTPUT_TOLERANCE, f"DiT through a plan vs Wan2.2, row {index}: {error}"


def test_intermediates_match_official_hooks(
    reference_dit: WanDiT, wan_reference_dir: Path, scalar_case: dict[str, torch.Tensor]
) -> None:
    """Sinusoid, time embedding/projection, patch and text embedding, each block and the head."""
    from pusa_fw_wan.dit.blocks import timestep_sinusoid

    reference = load_file(wan_reference_dir / "dit" / "dit_t2v_intermediates.safetensors")
    captured: dict[str, list[torch.Tensor]] = {}

    def capture(name: str):
        def hook(_module: torch.nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            captured.setdefault(name, []).append(output.detach().clone())

        return hook

    model = reference_dit
    handles = [
        model.patch_embedding.register_forward_hook(capture("patch_embedding")),
        model.text_embedding.register_forward_hook(capture("text_embedding")),
        model.time_embedding.register_forward_hook(capture("time_embedding")),
        model.time_projection.register_forward_hook(capture("time_projection")),
        model.blocks[0].register_forward_hook(capture("block0")),
        model.blocks[1].register_forward_hook(capture("block1")),
        model.head.register_forward_hook(capture("head")),
    ]
    try:
        with torch.no_grad():
            for timestep in scalar_case["timesteps"]:
                model.forward_timesteps(scalar_case["x"][None], timestep[None], scalar_case["context"][None])
    finally:
        for handle in handles:
            handle.remove()

    errors = {
        "sinusoid": _max_abs(timestep_sinusoid(scalar_case["timesteps"], 256).float(), reference["sinusoid"]),
        "time_embedding": _max_abs(torch.cat(captured["time_embedding"]), reference["time_embedding"]),
        "time_projection": _max_abs(
            torch.cat(captured["time_projection"]).view(3, 6, 256), reference["time_projection"]
        ),
        "patch_embedding": _max_abs(captured["patch_embedding"][0][0], reference["patch_embedding"]),
        "text_embedding": _max_abs(captured["text_embedding"][0][0], reference["text_embedding"]),
        "block0": _max_abs(torch.cat(captured["block0"]), reference["block0"]),
        "block1": _max_abs(torch.cat(captured["block1"]), reference["block1"]),
        "head": _max_abs(torch.cat(captured["head"]), reference["head"]),
    }
    limits = {"sinusoid": 1e-7, "time_embedding": 1e-6, "time_projection": 1e-6}
    failures = {name: error for name, error in errors.items() if error > limits.get(name, 5e-6)}
    assert not failures, f"intermediates off: {failures} (all: {errors})"
