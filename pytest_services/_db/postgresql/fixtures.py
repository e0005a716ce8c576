"""A clean default database before each test (``postgresql_clean``).

The state to return to is the one ``postgresql_init`` prepared (an empty database without
it); :mod:`pytest_services._db.postgresql.clean` does the work, from the server's log.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Optional

import pytest

from pytest_services._db.postgresql.clean import PostgreSQLCleaner
from pytest_services._db.postgresql.describe import empty_state
from pytest_services._db.postgresql.prepare import connect
from pytest_services._db.reset import clean_when_asked, reset, when_asked
from pytest_services._db.state import State

#: The fixture whose use means a test talks to the server, for ``do_postgresql_clean``.
_SERVER = "postgresql_watcher"
when_asked(server=_SERVER, fixture="_postgresql_clean_when_asked")


@pytest.fixture(scope="session")
def do_postgresql_clean() -> bool:
    """Whether every test that uses the PostgreSQL server gets ``postgresql_clean`` (default
    False)."""
    return False


@pytest.fixture(scope="session")
def _postgresql_cleaner(
    _postgresql_address: Optional[tuple[str, int, str]], _postgresql_state: dict[str, State]
) -> Iterator[Optional[PostgreSQLCleaner]]:
    """Resets the default database of this session's server to its prepared state."""
    if _postgresql_address is None:
        yield None
        return
    host, port, database = _postgresql_address
    state = _postgresql_state.get("state") or empty_state(database)
    cleaner = PostgreSQLCleaner(lambda name: connect(host, port, name), state)
    yield cleaner
    cleaner.close()


@pytest.fixture
def postgresql_clean(_postgresql_cleaner: Optional[PostgreSQLCleaner]) -> None:
    """Put the default database in its prepared state (``postgresql_init``) before the test."""
    reset(_postgresql_cleaner, "postgres")


@pytest.fixture
def _postgresql_clean_when_asked(request: pytest.FixtureRequest) -> None:
    """``postgresql_clean`` for every test that uses the server, when ``do_postgresql_clean``
    is true (each such test gets this fixture once collected: see ``_db/reset.py``)."""
    clean_when_asked(
        request, server=_SERVER, do_clean="do_postgresql_clean", clean="postgresql_clean"
    )
