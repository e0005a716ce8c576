"""A clean default database before each test (``mysql_clean``), and ``mysql_url``.

The state to return to is the one ``mysql_init`` prepared (an empty database without it);
:mod:`pytest_services._db.mysql.clean` does the work, from the server's binary log.  Each
reset is told the test it runs before, so that the next one can name that test in what it
refuses to undo.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Optional
from urllib.parse import quote

import pytest

from pytest_services._db.mysql import driver
from pytest_services._db.mysql.clean import MySQLCleaner
from pytest_services._db.mysql.describe import empty_state
from pytest_services._db.reset import clean_when_asked, reset, when_asked
from pytest_services._db.state import State
from pytest_services.mysql import (
    _connect,
    _mysqldb,
)
from pytest_services.process import ServiceProcess

#: Fixtures whose use means a test talks to the server, for ``do_mysql_clean``.
_SERVER = "mysql_watcher"
when_asked(server=_SERVER, fixture="_mysql_clean_when_asked")


@pytest.fixture(scope="session")
def do_mysql_clean() -> bool:
    """Whether every test that uses the MySQL server gets ``mysql_clean`` (default False)."""
    return False


@pytest.fixture(scope="session")
def _mysql_cleaner(
    mysql: Optional[ServiceProcess],
    mysql_socket: str,
    mysql_database_name: str,
    _mysql_state: dict[str, State],
    _mysql_kept_databases: set[str],
) -> Iterator[Optional[MySQLCleaner]]:
    """Resets the default database of this session's server to its prepared state."""
    if mysql is None:
        yield None
        return
    mysqldb = _mysqldb()
    state = _mysql_state.get("state") or empty_state(mysql_database_name)
    cleaner = MySQLCleaner(
        lambda: _connect(mysqldb, mysql_socket, autocommit=True), state, _mysql_kept_databases
    )
    yield cleaner
    cleaner.close()


@pytest.fixture
def mysql_clean(
    request: pytest.FixtureRequest,
    _mysql_cleaner: Optional[MySQLCleaner],
    mysql: Optional[ServiceProcess],
) -> None:
    """Put the default database in its prepared state (``mysql_init``) before the test."""
    reset(_mysql_cleaner, mysql.name if mysql is not None else "mysql", request.node.nodeid)


@pytest.fixture
def _mysql_clean_when_asked(request: pytest.FixtureRequest) -> None:
    """``mysql_clean`` for every test that uses the server, when ``do_mysql_clean`` is true
    (each such test gets this fixture once collected: see ``_db/reset.py``)."""
    clean_when_asked(request, server=_SERVER, do_clean="do_mysql_clean", clean="mysql_clean")


@pytest.fixture(scope="session")
def mysql_url(
    mysql: Optional[ServiceProcess], mysql_socket: str, mysql_database: Optional[str]
) -> Optional[str]:
    """SQLAlchemy URL of the default database over the server's unix socket, naming the
    installed driver (``mysql+mysqldb://`` or ``mysql+pymysql://``)."""
    if mysql is None or mysql_database is None:
        return None
    return (
        f"{driver.url_scheme()}://root@/{quote(mysql_database)}"
        f"?unix_socket={quote(mysql_socket)}&charset=utf8mb4"
    )
