"""A private PostgreSQL server for each test session (and each xdist worker).

``initdb`` runs once per installation, and the default database is created and filled
(``postgresql_init``) once per state: the results go into a per-user cache folder that all
sessions share, and each session starts its server from a copy of it in memory.  The server
reads no configuration file (every setting is on its command line), listens on a unix socket
only, trusts the superuser ``postgres`` over that socket, and its data is thrown away when
the session ends.  When pytest runs as root, the server runs as the ``postgres`` account,
in a folder of that account's.

Environment variables:

``PYTEST_SERVICES_CACHE_DIR``
    Folder for the shared cache (default: ``pytest-services-cache-<uid>`` in
    ``memory_root_dir``); the clusters live in its ``postgresql`` subfolder.
``PYTEST_SERVICES_PG_BINDIR``
    The folder of the server programs (default: the newest ``/usr/lib/postgresql/*/bin``,
    else ``pg_config --bindir``, else the folder of ``postgres`` on ``PATH``).
"""

from __future__ import annotations

__all__ = [
    "PostgreSQLError",
    "PostgreSQLInit",
    "PostgreSQLInitError",
    "hash_files",
    "postgresql",
    "postgresql_base_dir",
    "postgresql_data_dir",
    "postgresql_database",
    "postgresql_database_getter",
    "postgresql_database_name",
    "postgresql_dsn",
    "postgresql_host",
    "postgresql_init",
    "postgresql_listen_tcp",
    "postgresql_port",
    "postgresql_url",
    "postgresql_watcher",
]

import os
from collections.abc import Iterator
from logging import Logger
from typing import Any, Callable, Optional
from urllib.parse import quote

import pytest

from pytest_services import folders
from pytest_services._db import spare
from pytest_services._db.postgresql import driver
from pytest_services._db.postgresql import early as early_server
from pytest_services._db.postgresql.cache import hand_over
from pytest_services._db.postgresql.describe import quote as quote_identifier
from pytest_services._db.postgresql.init import PostgreSQLInit, dsn_of
from pytest_services._db.postgresql.prepare import PostgreSQLEngine
from pytest_services._db.postgresql.server import (
    START_TIMEOUT,
    account,
    get_server,
    postgresql_cache_dir,
    shut_down_now,
)
from pytest_services._db.prepare import state_entry
from pytest_services._db.session import prepare_for_session
from pytest_services._db.state import State, hash_files
from pytest_services._engine.account import open_to
from pytest_services._engine.paths import private_dir, socket_path
from pytest_services.exceptions import PostgreSQLError, PostgreSQLInitError
from pytest_services.process import ServiceProcess
from pytest_services.service import WatcherGetter


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        pytest.skip("PostgreSQL fixtures need psycopg 3: pip install 'pytest-services[postgresql]'")
    return psycopg


@pytest.fixture(scope="session")
def postgresql_base_dir(
    request: pytest.FixtureRequest,
    run_services: bool,
    memory_root_dir: str,
    worker_id: str,
    services_log: Logger,
) -> Iterator[Optional[str]]:
    """Folder in memory of this session's PostgreSQL server, its account's own; None when
    services are off."""
    if not run_services:
        yield None
        return
    early = early_server.current()
    parent = folders.absolute(request.config, memory_root_dir)
    session = early.take_folder(parent, worker_id) if early is not None else None
    if session is not None:  # the server started while the session collected is in it
        try:
            yield os.path.join(session, "postgresql")
        finally:
            folders._release_session_dir(session)
        folders._remove(session)
        return
    server_account = account()
    if server_account is None:
        yield private_dir(os.path.join(request.getfixturevalue("memory_temp_dir"), "postgresql"))
        return
    # Root's session folders stay closed: the account gets a folder of its own, in a session
    # folder of its own, removed by the watchdog or the next session if this one is killed.
    with folders._owned_session_dir(
        request, memory_root_dir, worker_id, services_log, "PostgreSQL folder"
    ) as session:
        yield open_to(server_account, session, "postgresql")
    folders._remove(session)


@pytest.fixture(scope="session")
def postgresql_data_dir(postgresql_base_dir: Optional[str]) -> Optional[str]:
    """Data directory of this session's PostgreSQL server, copied from the shared cache."""
    return None if postgresql_base_dir is None else os.path.join(postgresql_base_dir, "data")


@pytest.fixture(scope="session")
def postgresql_host(postgresql_base_dir: Optional[str]) -> Optional[str]:
    """Folder of the server's unix socket: what libpq takes as ``host``."""
    if postgresql_base_dir is None:
        return None
    return open_to(account(), postgresql_base_dir, "run")


@pytest.fixture(scope="session")
def postgresql_port(run_services: bool, port_getter: Callable[[], int]) -> Optional[int]:
    """Port of the server: in its socket's name, and on 127.0.0.1 with ``postgresql_listen_tcp``."""
    if not run_services:
        return None
    early = early_server.current()
    port = early.take_port() if early is not None else None
    return port if port is not None else port_getter()


@pytest.fixture(scope="session")
def postgresql_listen_tcp() -> bool:
    """Whether the server also listens on 127.0.0.1 (default False; trusts every local user)."""
    return False


@pytest.fixture(scope="session")
def postgresql_init() -> Optional[PostgreSQLInit]:
    """How to fill the default database once (a ``PostgreSQLInit``); None leaves it empty."""
    return None


@pytest.fixture(scope="session")
def _postgresql_state() -> dict[str, State]:
    """The description of the prepared state the server started from, once it started."""
    return {}


@pytest.fixture(scope="session")
def postgresql_watcher(
    request: pytest.FixtureRequest,
    watcher_getter: WatcherGetter,
    services_log: Logger,
    memory_root_dir: str,
    postgresql_base_dir: Optional[str],
    postgresql_data_dir: Optional[str],
    postgresql_host: Optional[str],
    postgresql_port: Optional[int],
    postgresql_listen_tcp: bool,
    postgresql_init: Optional[PostgreSQLInit],
    postgresql_database_name: str,
    _postgresql_state: dict[str, State],
) -> Optional[ServiceProcess]:
    """The running PostgreSQL server process (a ``Popen``), started from a copy of the cache."""
    if postgresql_base_dir is None or postgresql_data_dir is None or postgresql_host is None:
        return None
    assert postgresql_port is not None
    if postgresql_init is not None and not isinstance(postgresql_init, PostgreSQLInit):
        raise TypeError(
            f"postgresql_init must return a PostgreSQLInit or None, not {postgresql_init!r}."
        )
    if not driver.installed():
        _psycopg()  # says what to install
    imported = driver.import_meanwhile()  # while the server starts
    socket_path(postgresql_host, f".s.PGSQL.{postgresql_port}")  # refuse one too long
    server, server_account = get_server(), account()
    engine = PostgreSQLEngine(
        server,
        postgresql_cache_dir(memory_root_dir),
        postgresql_base_dir,
        server_account,
        services_log,
    )
    init = postgresql_init or PostgreSQLInit()  # the empty state: made once, copied too
    early = early_server.current()
    if early is not None:
        entry = ""  # a watcher_getter of the project's own starts its servers itself
        if isinstance(watcher_getter, WatcherGetter):
            entry = state_entry(engine, init, postgresql_database_name).path
        if early.claim(
            postgresql_base_dir, postgresql_host, postgresql_port, postgresql_listen_tcp, entry
        ):
            assert early.process is not None and early.state is not None
            _postgresql_state["state"] = early.state
            request.addfinalizer(spare.finish)  # before the session's folders go
            process = watcher_getter.adopt(early.process, request)
            return _started(request, process, postgresql_data_dir, imported)
    _postgresql_state["state"] = prepare_for_session(
        request, engine, init, postgresql_database_name, postgresql_data_dir, services_log
    )
    hand_over(server_account, postgresql_data_dir)
    program, arguments, kwargs, checker = server.launch(
        postgresql_data_dir,
        postgresql_host,
        postgresql_port,
        server_account,
        postgresql_base_dir,
        tcp=postgresql_listen_tcp,
    )
    process = watcher_getter(
        program,
        arguments,
        kwargs,
        checker=checker,
        timeout=START_TIMEOUT,
        request=request,
        grace=0,  # the data is thrown away: no clean shutdown needed
    )
    return _started(request, process, postgresql_data_dir, imported)


def _started(
    request: pytest.FixtureRequest,
    process: ServiceProcess,
    data_dir: str,
    imported: Callable[[], None],
) -> ServiceProcess:
    request.addfinalizer(lambda: shut_down_now(process, data_dir))  # before the stop
    imported()
    return process


@pytest.fixture(scope="session")
def postgresql_database_name() -> str:
    """Name of the default test database; override this fixture to choose another."""
    return "pytest_services_test"


@pytest.fixture(scope="session")
def postgresql_database_getter(
    postgresql_watcher: Optional[ServiceProcess],
    postgresql_host: Optional[str],
    postgresql_port: Optional[int],
) -> Optional[Callable[[str], str]]:
    """Function ``getter(name)`` that creates database ``name`` if missing and returns the name."""
    if postgresql_watcher is None or postgresql_host is None or postgresql_port is None:
        return None
    psycopg = _psycopg()
    dsn = dsn_of(postgresql_host, postgresql_port, "postgres")

    def getter(name: str) -> str:
        with psycopg.connect(dsn, autocommit=True) as connection:
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if exists is None:
                connection.execute(f"CREATE DATABASE {quote_identifier(name)}")
        return name

    return getter


@pytest.fixture(scope="session")
def postgresql_database(
    postgresql_watcher: Optional[ServiceProcess], postgresql_database_name: str
) -> Optional[str]:
    """Name of the default test database (``postgresql_database_name``), which exists."""
    # The prepared state the server starts from has it already.
    return None if postgresql_watcher is None else postgresql_database_name


@pytest.fixture(scope="session")
def postgresql(
    postgresql_watcher: Optional[ServiceProcess], postgresql_database: Optional[str]
) -> Optional[ServiceProcess]:
    """The running PostgreSQL server process, once the default test database exists."""
    return postgresql_watcher


@pytest.fixture(scope="session")
def _postgresql_address(
    postgresql: Optional[ServiceProcess],
    postgresql_host: Optional[str],
    postgresql_port: Optional[int],
    postgresql_database: Optional[str],
) -> Optional[tuple[str, int, str]]:
    """Socket folder, port and default database of the running server; None without one."""
    if postgresql is None or postgresql_host is None or postgresql_database is None:
        return None
    assert postgresql_port is not None
    return postgresql_host, postgresql_port, postgresql_database


@pytest.fixture(scope="session")
def postgresql_dsn(_postgresql_address: Optional[tuple[str, int, str]]) -> Optional[str]:
    """libpq connection string of the default database, e.g. for ``psycopg.connect``."""
    return None if _postgresql_address is None else dsn_of(*_postgresql_address)


@pytest.fixture(scope="session")
def postgresql_url(_postgresql_address: Optional[tuple[str, int, str]]) -> Optional[str]:
    """SQLAlchemy URL of the default database over the server's unix socket (psycopg 3)."""
    if _postgresql_address is None:
        return None
    host, port, database = _postgresql_address
    return f"postgresql+psycopg://postgres@/{quote(database)}?host={quote(host)}&port={port}"
