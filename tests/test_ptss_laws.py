"""PTSS laws beyond the shifted uniform: logit-normal and mixture marginals, the held-frames law, and FAFM
with all frames equal against scalar flow matching.

Statistics: the KS checks use the DKW bound with a false-alarm rate of 1e-6 at 20 000 draws
(`DKW_EPS` ~ 0.0137); their power is shown by the same draws failing, by a wide margin, against the
nearest wrong law. Proportions use a 5-sigma binomial band (false alarm < 1e-6).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pusa_fw.errors import InputError
from pusa_fw.fafm import fafm_step, noise_latents, velocity_target
from pusa_fw.ptss import PTSS, training_sigma_grid

NUM_DRAWS = 20_000
FALSE_ALARM = 1e-6
DKW_EPS = math.sqrt(math.log(2.0 / FALSE_ALARM) / (2.0 * NUM_DRAWS))


def ks_distance(samples: torch.Tensor, law: PTSS) -> float:
    """sup |F_n - F| against `law.cdf` (continuous), from the sorted sample."""
    ordered = torch.sort(samples.to(torch.float64)).values.clamp(1e-12, 1 - 1e-12)
    n = ordered.numel()
    cdf = law.cdf(ordered)
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(ranks / n - cdf, cdf - (ranks - 1) / n).max())


LAWS = [
    PTSS(p_async=0.5, marginal="logit_normal"),
    PTSS(p_async=1.0, marginal="logit_normal", logit_mean=0.5, logit_std=0.8, shift=3.0),
    PTSS(p_async=0.3, marginal="logit_normal", uniform_fraction=0.2, shift=5.0),
]


@pytest.mark.parametrize("law", LAWS, ids=["logit-normal", "shifted-logit-normal", "80-20-mixture"])
def test_marginals_follow_the_configured_law(law):
    sigmas = law.sample(NUM_DRAWS, 2, torch.Generator().manual_seed(21))
    for frame in range(2):
        assert ks_distance(sigmas[:, frame], law) < DKW_EPS


def test_marginal_checks_have_power_against_the_nearest_wrong_law():
    # The 20 % uniform component moves the CDF by at most ~0.03, so this check uses 10x the draws
    # (DKW bound 0.006 at the same false-alarm rate) to separate the mixture from its logit-normal part.
    draws = 10 * NUM_DRAWS
    bound = math.sqrt(math.log(2.0 / FALSE_ALARM) / (2.0 * draws))
    mixture = PTSS(marginal="logit_normal", uniform_fraction=0.2)
    sigmas = mixture.sample(draws, 1, torch.Generator().manual_seed(22))[:, 0]
    assert ks_distance(sigmas, mixture) < bound
    assert ks_distance(sigmas, PTSS(marginal="logit_normal")) > 3 * bound  # mixture weight ignored
    assert ks_distance(sigmas, PTSS()) > 5 * bound  # uniform marginal
    assert ks_distance(sigmas, mixture.model_copy(update={"shift": 3.0})) > 5 * bound


@settings(deadline=None, max_examples=30)
@given(
    batch=st.integers(1, 6),
    frames=st.integers(2, 12),
    seed=st.integers(0, 2**31 - 1),
    fraction=st.sampled_from([0.0, 0.2, 1.0]),
)
def test_p_async_zero_and_one_with_the_logit_normal_law(batch, frames, seed, fraction):
    synchronous = PTSS(p_async=0.0, marginal="logit_normal", uniform_fraction=fraction)
    sigmas = synchronous.sample(batch, frames, torch.Generator().manual_seed(seed))
    assert bool((sigmas == sigmas[:, :1]).all())
    independent = PTSS(p_async=1.0, marginal="logit_normal", uniform_fraction=fraction)
    drawn = independent.draw(batch, frames, torch.Generator().manual_seed(seed))
    assert not bool(drawn.synchronous.any())
    assert bool(((drawn.sigmas >= 0) & (drawn.sigmas <= 1)).all())


def test_p_async_one_frames_are_uncorrelated_and_zero_fully_correlated():
    for p_async, expected in ((1.0, 0.0), (0.0, 1.0)):
        law = PTSS(p_async=p_async, marginal="logit_normal", uniform_fraction=0.2)
        sigmas = law.sample(NUM_DRAWS, 2, torch.Generator().manual_seed(23)).double()
        assert float(torch.corrcoef(sigmas.T)[0, 1]) == pytest.approx(expected, abs=0.03)


@settings(deadline=None, max_examples=40)
@given(
    batch=st.integers(1, 8),
    frames=st.integers(2, 12),
    held=st.integers(1, 11),
    p_async=st.sampled_from([0.0, 0.5, 1.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_held_samples_hold_exactly_k_frames_at_zero(batch, frames, held, p_async, seed):
    held = min(held, frames - 1)
    law = PTSS(p_async=p_async, held_probability=1.0, held_frames=held)
    drawn = law.draw(batch, frames, torch.Generator().manual_seed(seed))
    assert bool((drawn.held.sum(dim=1) == held).all())
    assert bool((drawn.sigmas[drawn.held] == 0).all())
    assert bool((drawn.sigmas[~drawn.held] > 0).all())  # continuous draws never hit 0 exactly
    assert torch.equal(drawn.loss_mask, ~drawn.held)


def test_held_law_fraction_and_positions_are_uniform():
    frames, held = 6, 2
    law = PTSS(held_probability=0.3, held_frames=held)
    drawn = law.draw(NUM_DRAWS, frames, torch.Generator().manual_seed(24))
    counts = drawn.held.sum(dim=1)
    assert set(counts.unique().tolist()) == {0, held}
    band = 5 * math.sqrt(0.3 * 0.7 / NUM_DRAWS)
    assert float((counts == held).double().mean()) == pytest.approx(0.3, abs=band)
    # Each frame is held with probability 0.3 * k / F.
    per_frame = drawn.held.double().mean(dim=0)
    expected = 0.3 * held / frames
    assert bool(((per_frame - expected).abs() < 5 * math.sqrt(expected * (1 - expected) / NUM_DRAWS)).all())


def test_held_law_rejects_holding_every_frame():
    with pytest.raises(InputError, match="held_frames=3 would hold all 3"):
        PTSS(held_probability=0.5, held_frames=3).draw(2, 3, torch.Generator())


def test_bad_law_combinations_name_the_fields():
    with pytest.raises(ValidationError, match="num_train_steps=1000 needs marginal='uniform'"):
        PTSS(num_train_steps=1000, marginal="logit_normal")
    with pytest.raises(ValidationError, match="uniform_fraction"):
        PTSS(uniform_fraction=0.2)
    with pytest.raises(ValidationError, match="logit_std"):
        PTSS(marginal="logit_normal", logit_std=0.0)


class HeldFramesAreWrong:
    """Exact velocity from x0 for noisy frames, a large wrong answer for frames at sigma 0."""

    def velocity(self, latents, sigmas, context):
        sigma = sigmas[:, None, :, None, None].to(latents.dtype)
        exact = (latents - context) / torch.where(sigma > 0, sigma, torch.ones_like(sigma))
        return torch.where(sigma > 0, exact, torch.full_like(latents, 100.0))


def test_the_loss_ignores_held_frames():
    x0 = torch.randn((4, 3, 5, 2, 2), generator=torch.Generator().manual_seed(25), dtype=torch.float64)
    law = PTSS(p_async=0.5, held_probability=1.0, held_frames=2)
    loss = fafm_step(HeldFramesAreWrong(), x0, x0, law, torch.Generator().manual_seed(26))
    assert float(loss) < 1e-12
    # Without the held law the same backbone is exact everywhere (no frame at 0), and with it but
    # frames not masked the loss would be huge: check the mask is what makes it zero.
    drawn = law.draw(4, 5, torch.Generator().manual_seed(26))
    assert bool(drawn.held.any())


class ScalarOrFrameBackbone(torch.nn.Module):
    """A small conv net whose output depends on sigma per frame (`[B, F]`) or per sample (`[B]`)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(4, 4, 3, padding=1)
        torch.nn.init.normal_(self.conv.weight, generator=torch.Generator().manual_seed(27))

    def velocity(self, latents, sigmas, context):
        if sigmas.ndim == 1:
            sigma = sigmas[:, None, None, None, None]
        else:
            sigma = sigmas[:, None, :, None, None]
        return self.conv(latents) * (1 + sigma) + sigma


def test_fafm_with_all_frames_equal_is_scalar_flow_matching():
    x0 = torch.randn((3, 4, 5, 4, 4), generator=torch.Generator().manual_seed(28))
    backbone = ScalarOrFrameBackbone()
    law = PTSS(p_async=0.0, shift=3.0)
    loss = fafm_step(backbone, x0, None, law, torch.Generator().manual_seed(29))
    # The scalar reference: one sigma per sample, noised and compared over the whole clip.
    generator = torch.Generator().manual_seed(29)
    sigma = law.sample(3, 5, generator)[:, 0]
    eps = torch.randn(x0.shape, generator=generator)
    noised = (1 - sigma[:, None, None, None, None]) * x0 + sigma[:, None, None, None, None] * eps
    reference = torch.nn.functional.mse_loss(backbone.velocity(noised, sigma, None), eps - x0)
    assert float(loss.detach()) == pytest.approx(float(reference.detach()), rel=1e-6)
    assert torch.equal(noise_latents(x0, eps, sigma[:, None].expand(3, 5)), noised)
    assert torch.equal(velocity_target(x0, eps), eps - x0)


def test_default_law_keeps_its_stream():
    """Adding laws did not change what the default and official-grid laws draw."""
    generator = torch.Generator().manual_seed(30)
    coin = torch.rand(4, generator=generator, dtype=torch.float64)
    shared = torch.rand((4, 1), generator=generator, dtype=torch.float64)
    independent = torch.rand((4, 3), generator=generator, dtype=torch.float64)
    expected = torch.where((coin >= 0.5)[:, None], shared.expand(4, 3), independent)
    law = PTSS(p_async=0.5, shift=1.0)
    assert torch.equal(law.sample(4, 3, torch.Generator().manual_seed(30)), expected.float())
    assert training_sigma_grid(10, 1.0).shape == (10,)


@settings(max_examples=40)
@given(
    batch=st.integers(1, 6),
    frames=st.integers(3, 12),
    low=st.integers(1, 5),
    extra=st.integers(0, 5),
    seed=st.integers(0, 2**31 - 1),
)
def test_a_held_count_range_holds_between_min_and_max_frames_at_zero(batch, frames, low, extra, seed):
    high = min(low + extra, frames - 1)
    low = min(low, high)
    law = PTSS(p_async=0.5, held_probability=1.0, held_frames=low, held_frames_max=high)
    drawn = law.draw(batch, frames, torch.Generator().manual_seed(seed))
    counts = drawn.held.sum(dim=1)
    assert bool(((counts >= low) & (counts <= high)).all())
    assert bool((drawn.sigmas[drawn.held] == 0).all())
    assert bool((drawn.sigmas[~drawn.held] > 0).all())


def test_a_held_count_range_draws_every_count_equally_often():
    law = PTSS(held_probability=1.0, held_frames=1, held_frames_max=3)
    counts = law.draw(NUM_DRAWS, 9, torch.Generator().manual_seed(5)).held.sum(dim=1)
    band = 5 * math.sqrt((1 / 3) * (2 / 3) / NUM_DRAWS)
    for k in (1, 2, 3):
        assert float((counts == k).double().mean()) == pytest.approx(1 / 3, abs=band)


def test_a_degenerate_range_holds_what_the_exact_count_holds():
    """The count uniforms come after the keys, so a range k..k leaves sigmas and held frames as k alone."""
    exact = PTSS(p_async=0.5, held_probability=0.5, held_frames=2)
    same = PTSS(p_async=0.5, held_probability=0.5, held_frames=2, held_frames_max=2)
    first = exact.draw(8, 6, torch.Generator().manual_seed(3))
    ranged = same.draw(8, 6, torch.Generator().manual_seed(3))
    assert torch.equal(ranged.held, first.held)
    assert torch.equal(ranged.sigmas, first.sigmas)


def test_a_held_count_range_is_checked():
    with pytest.raises(ValidationError, match="held_frames_max=1 is below held_frames=2"):
        PTSS(held_frames=2, held_frames_max=1)
    with pytest.raises(InputError, match="held_frames_max=4 would hold all 4"):
        PTSS(held_probability=0.5, held_frames_max=4).draw(2, 4, torch.Generator())


@settings(max_examples=40)
@given(
    batch=st.integers(1, 6),
    frames=st.integers(2, 10),
    p_async=st.sampled_from([0.0, 0.5, 1.0]),
    multiplier=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**31 - 1),
)
def test_a_held_multiplier_shows_held_frames_at_that_share_of_their_drawn_level(batch, frames, p_async, multiplier,
                                                                               seed):
    """The held frames of the clean law, scaled: the same draw stream, the same frames, the other frames untouched."""
    clean = PTSS(p_async=p_async, held_probability=0.7, held_frames=1)
    shown = PTSS(p_async=p_async, held_probability=0.7, held_frames=1, held_multiplier=multiplier)
    reference = clean.draw(batch, frames, torch.Generator().manual_seed(seed))
    levels = PTSS(p_async=p_async).draw(batch, frames, torch.Generator().manual_seed(seed)).sigmas
    drawn = shown.draw(batch, frames, torch.Generator().manual_seed(seed))
    assert torch.equal(drawn.held, reference.held) and torch.equal(drawn.synchronous, reference.synchronous)
    assert torch.equal(drawn.sigmas[~drawn.held], reference.sigmas[~drawn.held])
    # float32 levels times m against float64 levels times m, each rounded once to float32: within 2 ulp
    assert torch.allclose(drawn.sigmas[drawn.held], (levels * multiplier)[drawn.held], rtol=2.5e-7, atol=0)
    assert bool((drawn.sigmas[drawn.held] > 0).all()) and torch.equal(drawn.loss_mask, ~drawn.held)


def test_a_held_multiplier_is_checked():
    with pytest.raises(ValidationError, match="held_multiplier"):
        PTSS(held_probability=1.0, held_multiplier=1.0)
    with pytest.raises(ValidationError, match="held_multiplier"):
        PTSS(held_probability=1.0, held_multiplier=-0.1)
