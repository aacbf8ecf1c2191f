"""FAFM: per-frame flow-matching loss, its weights and masks, BSMNTW weights and the training step."""

from __future__ import annotations

import math

import pytest
import torch
from einops import rearrange
from hypothesis import given, settings
from hypothesis import strategies as st

from pusa_fw.backbone import Backbone
from pusa_fw.errors import InputError
from pusa_fw.fafm import (
    bsmntw_weights,
    fafm_loss,
    fafm_step,
    frame_losses,
    noise_latents,
    velocity_target,
)
from pusa_fw.ptss import PTSS, training_sigma_grid

seeds = st.integers(min_value=0, max_value=2**31 - 1)
shapes = st.tuples(
    st.integers(1, 3), st.integers(1, 4), st.integers(1, 6), st.integers(1, 4), st.integers(1, 4)
)


def random_tensors(shape: tuple[int, ...], seed: int, count: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator) for _ in range(count)]


def random_mask(batch: int, frames: int, seed: int) -> torch.Tensor:
    """A random `[B, F]` bool mask with at least one True."""
    mask = torch.rand((batch, frames), generator=torch.Generator().manual_seed(seed)) < 0.6
    mask[0, 0] = True
    return mask


class ExactVelocityFromX0(Backbone):
    """Knows x0 (the context) and returns (x_sigma - x0) / sigma, which is eps - x0 for sigma > 0."""

    def velocity(self, latents, sigmas, context):
        return (latents - context) / rearrange(sigmas.to(latents.dtype), "b f -> b 1 f 1 1")


class RecordingBackbone(Backbone):
    """A 1x1x1 conv velocity model that remembers the sigmas it was given."""

    def __init__(self, channels: int) -> None:
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(channels, channels, kernel_size=1)
        self.seen_sigmas: list[torch.Tensor] = []

    def velocity(self, latents, sigmas, context):
        self.seen_sigmas.append(sigmas.clone())
        return self.conv(latents)


# --- Hypothesis properties ----------------------------------------------------------------------------


@settings(deadline=None)
@given(shape=shapes, seed=seeds, weighted=st.booleans(), masked=st.booleans())
def test_loss_is_zero_for_the_exact_velocity(shape, seed, weighted, masked):
    x0, eps, weights = random_tensors(shape, seed, 2) + [torch.rand(shape[0], shape[2]) * 3]
    mask = random_mask(shape[0], shape[2], seed) if masked else None
    exact = velocity_target(x0, eps)
    loss = fafm_loss(exact, x0, eps, frame_weights=weights if weighted else None, frame_mask=mask)
    assert loss.shape == () and loss.dtype == torch.float32
    assert float(loss) == 0.0
    assert torch.equal(frame_losses(exact, x0, eps), torch.zeros(shape[0], shape[2]))


@settings(deadline=None)
@given(shape=shapes, seed=seeds, data=st.data())
def test_per_frame_loss_is_zero_exactly_on_the_exact_frames(shape, seed, data):
    batch, _, frames = shape[:3]
    exact_frames = torch.tensor(data.draw(st.lists(st.booleans(), min_size=frames, max_size=frames)))
    x0, eps, error = random_tensors(shape, seed, 3)
    error = error + 0.5  # never zero on a whole frame
    wrong_everywhere = velocity_target(x0, eps) + error
    keep = rearrange(exact_frames, "f -> 1 1 f 1 1")
    pred = torch.where(keep, velocity_target(x0, eps), wrong_everywhere)
    losses = frame_losses(pred, x0, eps)
    assert losses.shape == (batch, frames)
    assert bool((losses[:, exact_frames] == 0).all())
    assert bool((losses[:, ~exact_frames] > 0).all())


@settings(deadline=None)
@given(shape=shapes, seed=seeds, weight_rank=st.sampled_from([None, 1, 2]), masked=st.booleans())
def test_weights_and_mask_match_a_hand_computation(shape, seed, weight_rank, masked):
    batch, channels, frames, height, width = shape
    pred, x0, eps = random_tensors(shape, seed, 3)
    generator = torch.Generator().manual_seed(seed + 1)
    weight_shape = (batch, frames)[2 - weight_rank :] if weight_rank is not None else None
    weights = None if weight_shape is None else torch.rand(weight_shape, generator=generator) * 2
    mask = random_mask(batch, frames, seed) if masked else None

    total, counted = 0.0, 0
    expected_terms = torch.zeros(batch, frames, dtype=torch.float64)
    for b in range(batch):
        for f in range(frames):
            if mask is not None and not mask[b, f]:
                continue
            diff = pred[:, :, f].double()[b] - (eps[:, :, f].double()[b] - x0[:, :, f].double()[b])
            mse = float((diff**2).sum()) / (channels * height * width)
            weight = 1.0 if weights is None else float(weights[f] if weight_rank == 1 else weights[b, f])
            expected_terms[b, f] = weight * mse
            total += weight * mse
            counted += 1

    loss = fafm_loss(pred, x0, eps, frame_weights=weights, frame_mask=mask)
    terms = fafm_loss(pred, x0, eps, frame_weights=weights, frame_mask=mask, reduction="none")
    assert float(loss) == pytest.approx(total / counted, rel=1e-5)
    torch.testing.assert_close(terms.double(), expected_terms, rtol=1e-5, atol=1e-6)
    if mask is not None:
        assert bool((terms[~mask] == 0).all())


@settings(deadline=None)
@given(shape=shapes, seed=seeds)
def test_noise_latents_interpolates_per_frame(shape, seed):
    batch, _, frames = shape[:3]
    x0, eps = random_tensors(shape, seed, 2)
    sigmas = torch.rand((batch, frames), generator=torch.Generator().manual_seed(seed))
    sigmas[:, 0] = 0.0
    sigmas[:, -1] = 1.0 if frames > 1 else 0.0
    noised = noise_latents(x0, eps, sigmas)
    assert noised.shape == x0.shape and noised.dtype == x0.dtype
    assert torch.equal(noised[:, :, 0], x0[:, :, 0])  # sigma 0: bit-exact clean frame
    if frames > 1:
        assert torch.equal(noised[:, :, -1], eps[:, :, -1])  # sigma 1: pure noise
    for b in range(batch):
        for f in range(frames):
            sigma = float(sigmas[b, f])
            expected = (1 - sigma) * x0[b, :, f].double() + sigma * eps[b, :, f].double()
            torch.testing.assert_close(noised[b, :, f].double(), expected, rtol=1e-6, atol=1e-6)


# --- Gradients, weights, steps ----------------------------------------------------------------------------


def test_loss_gradient_matches_the_closed_form():
    shape = (2, 3, 4, 2, 3)
    batch, channels, frames, height, width = shape
    pred, x0, eps = random_tensors(shape, 3, 3)
    pred.requires_grad_(True)
    weights = torch.tensor([0.5, 1.0, 2.0, 0.0])
    mask = torch.tensor([[True, True, False, True], [False, True, True, True]])
    fafm_loss(pred, x0, eps, frame_weights=weights, frame_mask=mask).backward()
    scale = rearrange(weights, "f -> 1 1 f 1 1") * rearrange(mask, "b f -> b 1 f 1 1")
    expected = 2 * (pred.detach() - (eps - x0)) * scale / (channels * height * width * int(mask.sum()))
    torch.testing.assert_close(pred.grad, expected, rtol=1e-5, atol=1e-7)
    assert bool((pred.grad[:, :, 3] == 0).all())  # weight 0 frame
    assert bool((pred.grad[0, :, 2] == 0).all()) and bool((pred.grad[1, :, 0] == 0).all())  # masked


def test_fafm_step_is_zero_for_an_exact_velocity_backbone():
    x0 = torch.randn((2, 3, 5, 4, 4), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    mask = torch.tensor([False, True, True, True, True])  # e.g. frame 0 held for conditioning
    for ptss in (PTSS(p_async=0.5, num_train_steps=1000), PTSS(p_async=1.0, shift=3.0, num_train_steps=50)):
        loss = fafm_step(
            ExactVelocityFromX0(), x0, x0, ptss, torch.Generator().manual_seed(5),
            frame_weights=bsmntw_weights, frame_mask=mask,
        )
        assert 0.0 <= float(loss) < 1e-12
    # The same with fp32 latents and continuous sigmas: zero up to fp32 rounding divided by sigma.
    x0_32 = x0.float()
    loss = fafm_step(ExactVelocityFromX0(), x0_32, x0_32, PTSS(), torch.Generator().manual_seed(6))
    assert float(loss) < 1e-6


def test_fafm_step_gradients_flow_and_draws_follow_the_seed():
    x0 = torch.randn((2, 4, 3, 4, 4), generator=torch.Generator().manual_seed(7))
    backbone = RecordingBackbone(channels=4)
    ptss = PTSS(p_async=0.5, num_train_steps=1000)
    loss = fafm_step(backbone, x0, None, ptss, torch.Generator().manual_seed(8), frame_weights=bsmntw_weights)
    loss.backward()
    loss = loss.detach()
    for parameter in backbone.conv.parameters():
        assert parameter.grad is not None and bool(torch.isfinite(parameter.grad).all())
        assert float(parameter.grad.abs().max()) > 0
    # The sigmas given to the backbone are the first draw from the generator.
    assert torch.equal(backbone.seen_sigmas[0], ptss.sample(2, 3, torch.Generator().manual_seed(8)))
    def step() -> torch.Tensor:
        generator = torch.Generator().manual_seed(8)
        return fafm_step(backbone, x0, None, ptss, generator, frame_weights=bsmntw_weights).detach()

    assert float(step()) == float(loss)
    # One gradient step on the same draw lowers the loss: the gradient is a descent direction.
    with torch.no_grad():
        for parameter in backbone.conv.parameters():
            parameter -= 1e-2 * parameter.grad
    assert float(step()) < float(loss)


def test_bsmntw_weights_on_the_official_grid():
    grid = training_sigma_grid(1000, 5.0)
    weights = bsmntw_weights(grid)
    assert weights.dtype == torch.float32 and weights.shape == grid.shape
    assert float(weights.double().mean()) == pytest.approx(1.0, abs=1e-6)  # normalised over the grid
    assert float(weights.min()) == 0.0 and int(weights.argmin()) == 0  # zero at sigma 1
    # docs/pusa_reference.md §4.2: "min 0, max 2.08 and grid mean 1"; the bump peaks at timestep 500.
    assert float(weights.max()) == pytest.approx(2.08, abs=0.005)
    assert float(grid[weights.argmax()]) == pytest.approx(0.5, abs=2e-3)
    assert bool((weights >= 0).all())


def test_bsmntw_is_frame_aware_only_when_applied_per_frame():
    # The official trainer averages the weights over the 21 frames; that average hardly varies.
    sigmas = PTSS(num_train_steps=1000).sample(4000, 21, torch.Generator().manual_seed(9))
    per_frame = bsmntw_weights(sigmas)
    assert per_frame.shape == (4000, 21)
    frame_mean = per_frame.mean(dim=1)
    assert float(frame_mean.std()) < 0.3 * float(per_frame.std())
    assert float(frame_mean.std()) == pytest.approx(float(per_frame.std()) / math.sqrt(21), rel=0.1)


# --- Errors --------------------------------------------------------------------------------------------


def test_bad_inputs_raise_input_errors_that_name_the_value():
    shape = (2, 3, 4, 2, 2)
    pred, x0, eps = random_tensors(shape, 10, 3)
    with pytest.raises(InputError, match="frame_weights must be finite and >= 0"):
        fafm_loss(pred, x0, eps, frame_weights=torch.tensor([1.0, -0.5, 1.0, 1.0]))
    with pytest.raises(InputError, match="frame_weights must be finite"):
        fafm_loss(pred, x0, eps, frame_weights=torch.tensor([1.0, math.nan, 1.0, 1.0]))
    with pytest.raises(InputError, match=r"frame_weights must have shape \[B, F\] = \(2, 4\)"):
        fafm_loss(pred, x0, eps, frame_weights=torch.ones(3))
    with pytest.raises(InputError, match="bool"):
        fafm_loss(pred, x0, eps, frame_mask=torch.ones(2, 4))
    with pytest.raises(InputError, match="excludes every frame"):
        fafm_loss(pred, x0, eps, frame_mask=torch.zeros(4, dtype=torch.bool))
    with pytest.raises(InputError, match="reduction"):
        fafm_loss(pred, x0, eps, reduction="sum")
    with pytest.raises(InputError, match=r"eps has shape \(2, 3, 4, 2, 1\)"):
        fafm_loss(pred, x0, eps[..., :1])
    with pytest.raises(InputError, match=r"\[B, C, F, H, W\]"):
        frame_losses(pred[0], x0[0], eps[0])
    with pytest.raises(InputError, match=r"sigmas must have shape \[B, F\] = \(2, 4\)"):
        noise_latents(x0, eps, torch.zeros(4))


def test_fafm_step_rejects_a_backbone_with_the_wrong_output_shape():
    class Truncating(Backbone):
        def velocity(self, latents, sigmas, context):
            return latents[:, :, :-1]

    x0 = torch.zeros(1, 2, 3, 2, 2)
    with pytest.raises(InputError, match=r"backbone.velocity returned \(1, 2, 2, 2, 2\)"):
        fafm_step(Truncating(), x0, None, PTSS(), torch.Generator().manual_seed(0))


@pytest.mark.gpu
def test_fafm_step_on_cuda_matches_cpu():
    x0 = torch.randn((2, 4, 3, 4, 4), generator=torch.Generator().manual_seed(7))
    backbone = RecordingBackbone(channels=4)
    ptss = PTSS(p_async=0.5)
    loss_cpu = fafm_step(backbone, x0, None, ptss, torch.Generator().manual_seed(8))
    backbone.conv.to("cuda")
    loss_gpu = fafm_step(backbone, x0.to("cuda"), None, ptss, torch.Generator().manual_seed(8))
    assert loss_gpu.device.type == "cuda"
    torch.testing.assert_close(backbone.seen_sigmas[1].cpu(), backbone.seen_sigmas[0])
    assert float(loss_gpu) == pytest.approx(float(loss_cpu), rel=1e-4)
