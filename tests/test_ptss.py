"""PTSS: per-frame sigma sampler. Hypothesis properties for p_async = 0 / 1 and statistical checks.

Statistical thresholds come from the Dvoretzky-Kiefer-Wolfowitz inequality,
P(sup |F_n - F| > eps) <= 2 exp(-2 n eps^2), which holds for any distribution (continuous or discrete):
with n = 20000 i.i.d. draws and a false-alarm probability of 1e-6, eps = 0.0190. Seeds are fixed, so the
tests are deterministic; the thresholds say the test would pass for (almost) every seed.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pusa_fw.errors import InputError
from pusa_fw.ptss import PTSS, shift_sigmas, training_sigma_grid

NUM_DRAWS = 20_000
FALSE_ALARM = 1e-6
DKW_EPS = math.sqrt(math.log(2.0 / FALSE_ALARM) / (2.0 * NUM_DRAWS))

shifts = st.floats(min_value=0.1, max_value=20.0, allow_nan=False)
grid_sizes = st.one_of(st.none(), st.integers(min_value=1, max_value=2000))
seeds = st.integers(min_value=0, max_value=2**31 - 1)


def analytic_cdf(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """CDF of shift(u), u ~ U(0,1): P(sigma <= s) = u(s) with u(s) = s / (shift - (shift - 1) s)."""
    return sigma / (shift - (shift - 1.0) * sigma)


def ks_distance_continuous(samples: torch.Tensor, shift: float) -> float:
    """sup |F_n - F| for a continuous F, from the sorted sample (both one-sided gaps)."""
    ordered = torch.sort(samples.to(torch.float64)).values
    n = ordered.numel()
    cdf = analytic_cdf(ordered, shift)
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(ranks / n - cdf, cdf - (ranks - 1) / n).max())


def ks_distance_discrete(samples: torch.Tensor, support: torch.Tensor) -> float:
    """sup |F_n - F| for the uniform law on `support` (both step functions jump only at support points)."""
    values = torch.sort(support.to(torch.float32)).values
    true_cdf = torch.arange(1, values.numel() + 1, dtype=torch.float64) / values.numel()
    empirical = torch.searchsorted(torch.sort(samples).values, values, right=True).to(torch.float64)
    return float((empirical / samples.numel() - true_cdf).abs().max())


# --- Hypothesis properties ----------------------------------------------------------------------------


@settings(deadline=None)
@given(
    batch=st.integers(1, 8), frames=st.integers(1, 24), shift=shifts, steps=grid_sizes, seed=seeds
)
def test_p_async_zero_gives_one_sigma_per_sample(batch, frames, shift, steps, seed):
    ptss = PTSS(p_async=0.0, shift=shift, num_train_steps=steps)
    sigmas, synchronous = ptss.sample_with_sync_mask(batch, frames, torch.Generator().manual_seed(seed))
    assert sigmas.shape == (batch, frames)
    assert torch.equal(sigmas, sigmas[:, :1].expand(batch, frames))
    assert bool(synchronous.all())


@settings(deadline=None)
@given(batch=st.integers(1, 8), frames=st.integers(2, 24), shift=shifts, seed=seeds)
def test_p_async_one_gives_independent_frames(batch, frames, shift, seed):
    ptss = PTSS(p_async=1.0, shift=shift)
    sigmas, synchronous = ptss.sample_with_sync_mask(batch, frames, torch.Generator().manual_seed(seed))
    assert not bool(synchronous.any())
    # Continuous independent draws: a row whose frames are all equal has probability ~0.
    assert bool((sigmas != sigmas[:, :1]).any(dim=1).all())


@settings(deadline=None)
@given(
    batch=st.integers(1, 8),
    frames=st.integers(1, 24),
    p_async=st.floats(0.0, 1.0),
    shift=shifts,
    steps=grid_sizes,
    seed=seeds,
)
def test_draws_are_valid_reproducible_and_sync_rows_constant(batch, frames, p_async, shift, steps, seed):
    ptss = PTSS(p_async=p_async, shift=shift, num_train_steps=steps)
    sigmas, synchronous = ptss.sample_with_sync_mask(batch, frames, torch.Generator().manual_seed(seed))
    assert sigmas.dtype == torch.float32 and sigmas.device.type == "cpu"
    assert synchronous.shape == (batch,) and synchronous.dtype == torch.bool
    assert bool(torch.isfinite(sigmas).all()) and bool((sigmas >= 0).all()) and bool((sigmas <= 1).all())
    assert torch.equal(sigmas[synchronous], sigmas[synchronous][:, :1].expand(-1, frames))
    if steps is not None:
        grid = training_sigma_grid(steps, shift).to(torch.float32)
        assert bool(torch.isin(sigmas, grid).all())
    again = ptss.sample(batch, frames, torch.Generator().manual_seed(seed))
    assert torch.equal(again, sigmas)


@settings(deadline=None)
@given(u=st.floats(0.0, 1.0), shift=shifts)
def test_shift_map_stays_in_unit_interval_and_inverts(u, shift):
    sigma = shift_sigmas(torch.tensor(u, dtype=torch.float64), shift)
    assert 0.0 <= float(sigma) <= 1.0
    assert float(sigma) == pytest.approx(shift * u / (1.0 + (shift - 1.0) * u), rel=1e-12, abs=1e-300)
    assert float(analytic_cdf(sigma, shift)) == pytest.approx(u, abs=1e-12)


@settings(deadline=None)
@given(value=st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.0 + 1e-9), st.just(math.nan)))
def test_invalid_p_async_names_the_field(value):
    with pytest.raises(ValidationError, match="p_async"):
        PTSS(p_async=value)


@settings(deadline=None)
@given(value=st.one_of(st.floats(max_value=0.0), st.just(math.inf), st.just(math.nan)))
def test_invalid_shift_names_the_field(value):
    with pytest.raises(ValidationError, match="shift"):
        PTSS(shift=value)


@pytest.mark.parametrize("value", [0, -3, 2.0, True, "1000"])
def test_invalid_num_train_steps_names_the_field(value):
    with pytest.raises(ValidationError, match="num_train_steps"):
        PTSS(num_train_steps=value)


def test_config_is_frozen_and_forbids_extra_fields():
    with pytest.raises(ValidationError, match="p_sync"):
        PTSS(p_sync=0.5)
    ptss = PTSS()
    with pytest.raises(ValidationError):
        ptss.p_async = 0.3  # type: ignore[misc]
    assert (ptss.p_async, ptss.shift, ptss.num_train_steps) == (1.0, 5.0, None)


@pytest.mark.parametrize(
    ("batch", "frames", "generator", "match"),
    [
        (0, 4, torch.Generator(), "batch_size"),
        (2, 0, torch.Generator(), "num_latent_frames"),
        (2.0, 4, torch.Generator(), "batch_size"),
        (2, 4, 1234, "torch.Generator"),
    ],
)
def test_bad_sample_arguments_raise_input_error(batch, frames, generator, match):
    with pytest.raises(InputError, match=match):
        PTSS().sample(batch, frames, generator)


# --- Statistics (fixed seeds, thresholds from DKW / binomial bounds) -----------------------------------


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0, 12.0])
def test_continuous_marginal_follows_the_shift(shift):
    ptss = PTSS(p_async=0.5, shift=shift)
    sigmas = ptss.sample(NUM_DRAWS, 3, torch.Generator().manual_seed(11 + int(shift)))
    for frame in range(3):  # each column is i.i.d. across samples, whatever p_async is
        assert ks_distance_continuous(sigmas[:, frame], shift) < DKW_EPS


def test_ks_check_has_power_against_a_wrong_shift():
    sigmas = PTSS(shift=5.0).sample(NUM_DRAWS, 1, torch.Generator().manual_seed(12))[:, 0]
    assert ks_distance_continuous(sigmas, 5.0) < DKW_EPS
    assert ks_distance_continuous(sigmas, 3.0) > 5 * DKW_EPS
    assert ks_distance_continuous(sigmas, 1.0) > 10 * DKW_EPS


@pytest.mark.parametrize(("steps", "shift"), [(1000, 5.0), (50, 3.0), (7, 1.0)])
def test_discrete_marginal_follows_its_grid(steps, shift):
    ptss = PTSS(p_async=0.7, shift=shift, num_train_steps=steps)
    sigmas = ptss.sample(NUM_DRAWS, 2, torch.Generator().manual_seed(13))
    support = training_sigma_grid(steps, shift)
    for frame in range(2):
        assert ks_distance_discrete(sigmas[:, frame], support) < DKW_EPS
    # Power: the same draws against the grid of another shift are far off.
    assert ks_distance_discrete(sigmas[:, 0], training_sigma_grid(steps, shift + 2.0)) > 3 * DKW_EPS


def test_official_grid_matches_reference_facts():
    grid = training_sigma_grid(1000, 5.0)
    assert grid.shape == (1000,)
    assert float(grid[0]) == 1.0 and bool((grid[1:] < grid[:-1]).all()) and float(grid[-1]) > 0.0
    # docs/pusa_reference.md §4.2: P(sigma > 0.5) = 0.83, P(sigma > 0.8) = 0.56 on the shift-5 grid.
    assert float((grid > 0.5).double().mean()) == pytest.approx(0.83, abs=0.005)
    assert float((grid > 0.8).double().mean()) == pytest.approx(0.56, abs=0.005)
    sigmas = PTSS(num_train_steps=1000).sample(NUM_DRAWS, 1, torch.Generator().manual_seed(14))
    on_grid = float((grid > 0.5).double().mean())
    assert float((sigmas > 0.5).double().mean()) == pytest.approx(on_grid, abs=DKW_EPS)


@pytest.mark.parametrize("p_async", [0.2, 0.5, 0.8])
def test_synchronous_fraction_is_one_minus_p_async(p_async):
    ptss = PTSS(p_async=p_async)
    sigmas, synchronous = ptss.sample_with_sync_mask(NUM_DRAWS, 4, torch.Generator().manual_seed(15))
    binomial_std = math.sqrt(p_async * (1.0 - p_async) / NUM_DRAWS)
    assert float(synchronous.double().mean()) == pytest.approx(1.0 - p_async, abs=5 * binomial_std)
    # Rows flagged asynchronous really are (continuous draws: no ties).
    assert bool((sigmas[~synchronous] != sigmas[~synchronous][:, :1]).any(dim=1).all())


@pytest.mark.parametrize("p_async", [0.0, 0.3, 0.7, 1.0])
def test_frame_correlation_is_one_minus_p_async(p_async):
    # Cov(sigma_0, sigma_1) = P(sync) Var(sigma): the correlation of two frames is 1 - p_async.
    sigmas = PTSS(p_async=p_async).sample(NUM_DRAWS, 2, torch.Generator().manual_seed(16)).double()
    correlation = float(torch.corrcoef(sigmas.T)[0, 1])
    assert correlation == pytest.approx(1.0 - p_async, abs=0.03)


def test_p_async_one_frames_are_jointly_independent():
    shift = 5.0
    sigmas = PTSS(p_async=1.0, shift=shift).sample(NUM_DRAWS, 2, torch.Generator().manual_seed(17)).double()
    for level in (0.3, 0.6, 0.9):
        marginal = float(analytic_cdf(torch.tensor(level, dtype=torch.float64), shift))
        joint = float(((sigmas[:, 0] <= level) & (sigmas[:, 1] <= level)).double().mean())
        assert joint == pytest.approx(marginal**2, abs=5 * math.sqrt(0.25 / NUM_DRAWS))
