"""Fixtures shared across the suite."""
from __future__ import annotations

import pytest

from esper.nissa import reset_hub


@pytest.fixture
def isolated_hub():
    """A test that configures the process's telemetry hub starts and ends with the unconfigured no-op hub."""
    reset_hub()
    yield
    reset_hub()
