"""Shared fixtures: where the reference corpora live, and hypothesis profiles.

Tests read real data through `data.corpora.data_folder`: $LLAMA2_SCRATCH_DATA, else the
read-only copies in ../shared/data beside the checkout, else the user cache (filled by checksummed
downloads). They write only under pytest's tmp_path.
"""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from data import corpora
from data.paths import DataError

BESIDE_CHECKOUT = Path(__file__).resolve().parents[2] / "shared" / "data"

# Deterministic in CI (derandomize): a failure seen there reproduces locally with the same profile.
settings.register_profile("ci", derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def shared_data():
    """The folder of reference corpora; the tests that need it fail (not skip) when it cannot be had."""
    try:
        return corpora.data_folder([BESIDE_CHECKOUT])
    except DataError as exc:
        pytest.fail(str(exc))
