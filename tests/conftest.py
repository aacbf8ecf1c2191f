"""Hypothesis profiles and shared fixtures.

Profiles: ``dev`` (default locally), ``ci`` (selected when the CI variable is set; derandomised), and
``thorough`` (HYPOTHESIS_PROFILE=thorough). Torch code has no deadline in any of them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile("dev", deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci", deadline=None, max_examples=40, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# The reference fixtures live inside the repository (tests/fixtures/), so a bare clone runs the suite.
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "wan_reference"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The Wan reference fixtures (``tests/fixtures/wan_reference``; see its README and manifest)."""
    assert FIXTURES.is_dir(), f"reference fixtures not found at {FIXTURES}; the checkout is incomplete"
    return FIXTURES


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors run fastest on one thread (and do not fight other processes for cores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
