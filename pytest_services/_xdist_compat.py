"""Registered after pytest-xdist, whose ``worker_id`` fixture returns "master" outside workers.

Of two plugins defining a fixture, the later one wins; 2.2-era conftest files expect
``local``, so this module defines the plugin's ``worker_id`` again, last.
"""

from __future__ import annotations

import pytest

from pytest_services.service import get_worker_id


@pytest.fixture(scope="session", name="worker_id")
def worker_id(request: pytest.FixtureRequest) -> str:
    """The pytest-xdist worker id (``gw0``, ``gw1``...), or ``local`` outside workers."""
    return get_worker_id(request.config)
