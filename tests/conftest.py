"""Shared fixtures: where the read-only corpora live, and hypothesis profiles.

Tests read real data from ../shared/data (beside the checkout; never copied into the repo) and
write only under pytest's tmp_path. LLAMA2_SCRATCH_SHARED overrides the location.
"""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

SHARED_DATA = Path(os.environ.get("LLAMA2_SCRATCH_SHARED",
                                  Path(__file__).resolve().parents[2] / "shared")) / "data"

# Deterministic in CI (derandomize): a failure seen there reproduces locally with the same profile.
settings.register_profile("ci", derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def shared_data():
    """Path to ../shared/data; the tests that need it fail (not skip) when it is missing."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data folder not found at {SHARED_DATA} (set LLAMA2_SCRATCH_SHARED)")
    return SHARED_DATA
