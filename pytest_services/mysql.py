"""A private MySQL or MariaDB server for each test session (and each xdist worker).

Initialising a data directory is the slow part of starting a server, so it happens once per
server binary, version and settings: the result goes into a per-user cache folder that all
sessions share, and each session starts its server from a copy of that folder in memory.
The cached data directory already has the time zone tables loaded, so ``CONVERT_TZ`` works.

The server never reads the system's ``my.cnf``: it gets a defaults file of its own
(``mysql_defaults_file``), listens on a unix socket in ``run_dir`` only, and its data is
thrown away when the session ends.

Environment variables:

``PYTEST_SERVICES_CACHE_DIR``
    Folder for the shared cache (default: ``pytest-services-cache-<uid>`` in
    ``memory_root_dir``); the data directories live in its ``mysql`` subfolder.
``PYTEST_SERVICES_MYSQLD``
    The server binary to use, as a path or a command name (default: the first of
    ``mariadbd`` and ``mysqld`` found on ``PATH`` or in the ``sbin`` folders).
"""

from __future__ import annotations

import os
from logging import Logger
from typing import Any, Callable, Optional
from urllib.parse import quote

import pytest

from pytest_services._db.mysql import driver
from pytest_services._db.mysql.cache import prepare_data_dir
from pytest_services._db.mysql.init import MySQLInit
from pytest_services._db.mysql.prepare import MySQLEngine
from pytest_services._db.mysql.server import (
    START_TIMEOUT,
    defaults_file_text,
    get_server,
    mysql_cache_dir,
)
from pytest_services._db.prepare import prepare_state_data_dir  # noqa: F401 - its old home
from pytest_services._db.session import prepare_for_session
from pytest_services._db.state import State, hash_files
from pytest_services._engine.paths import (
    private_dir,
    socket_path,
)
from pytest_services._engine.readiness import bounded
from pytest_services.exceptions import (
    MySQLError,
    MySQLInitError,
)
from pytest_services.process import ServiceProcess
from pytest_services.service import WatcherGetter

__all__ = [
    "MySQLError",
    "MySQLInit",
    "MySQLInitError",
    "hash_files",
    "mysql",
    "mysql_base_dir",
    "mysql_connection",
    "mysql_data_dir",
    "mysql_database",
    "mysql_database_getter",
    "mysql_database_name",
    "mysql_defaults_file",
    "mysql_init",
    "mysql_pid",
    "mysql_socket",
    "mysql_system_database",
    "mysql_watcher",
    "quote_identifier",
]


def _mysqldb() -> Any:
    """The client library (mysqlclient, else PyMySQL); skips the test when neither is there."""
    try:
        return driver.module()
    except ImportError:
        pytest.skip(driver.INSTALL_HINT)


def _connect(mysqldb: Any, socket: str, **kwargs: Any) -> Any:
    return driver.connect(socket, **kwargs)


def quote_identifier(name: str) -> str:
    """Quote a database or table name for SQL."""
    return "`{}`".format(name.replace("`", "``"))


@pytest.fixture(scope="session")
def mysql_base_dir(memory_temp_dir: str) -> str:
    """Folder in memory for this session's MySQL server: data, temporary files, my.cnf."""
    return private_dir(os.path.join(memory_temp_dir, "mysql"))


@pytest.fixture(scope="session")
def mysql_data_dir(mysql_base_dir: str) -> str:
    """Data directory of this session's MySQL server, copied from the shared cache."""
    return os.path.join(mysql_base_dir, "data")


@pytest.fixture(scope="session")
def mysql_socket(run_dir: str) -> str:
    """Unix socket path of this session's MySQL server (it does not listen on TCP)."""
    return socket_path(run_dir, "mysql.sock")


@pytest.fixture(scope="session")
def mysql_pid(run_dir: str) -> str:
    """Path of the pid file of this session's MySQL server."""
    return os.path.join(run_dir, "mysql.pid")


@pytest.fixture(scope="session")
def mysql_system_database() -> str:
    """Name of the MySQL system database (``mysql``)."""
    return "mysql"


@pytest.fixture(scope="session")
def mysql_defaults_file(
    run_services: bool,
    memory_root_dir: str,
    mysql_base_dir: str,
    mysql_data_dir: str,
    mysql_socket: str,
    mysql_pid: str,
) -> Optional[str]:
    """Path of the ``my.cnf`` written for this session's MySQL server (the system one is unused)."""
    if not run_services:
        return None
    server = get_server(memory_root_dir)
    tmp_dir = private_dir(os.path.join(mysql_base_dir, "tmp"))
    path = os.path.join(mysql_base_dir, "my.cnf")
    with open(path, "w", encoding="utf-8") as defaults:
        defaults.write(defaults_file_text(server, mysql_data_dir, mysql_socket, mysql_pid, tmp_dir))
    return path


@pytest.fixture(scope="session")
def mysql_init() -> Optional[MySQLInit]:
    """How to fill the default database once (a ``MySQLInit``); None leaves it empty."""
    return None


@pytest.fixture(scope="session")
def _mysql_state() -> dict[str, State]:
    """The description of the prepared state the server started from, once it started."""
    return {}


@pytest.fixture(scope="session")
def mysql_watcher(
    request: pytest.FixtureRequest,
    run_services: bool,
    watcher_getter: WatcherGetter,
    services_log: Logger,
    memory_root_dir: str,
    mysql_defaults_file: Optional[str],
    mysql_data_dir: str,
    mysql_socket: str,
    mysql_init: Optional[MySQLInit],
    mysql_database_name: str,
    _mysql_state: dict[str, State],
) -> Optional[ServiceProcess]:
    """The running MySQL server process (a ``Popen``), started from a copy of the cache."""
    if not run_services or mysql_defaults_file is None:
        return None
    mysqldb = _mysqldb()
    server = get_server(memory_root_dir)
    cache = mysql_cache_dir(memory_root_dir)
    if mysql_init is None:
        prepare_data_dir(server, cache, mysql_data_dir, services_log)
    else:
        if not isinstance(mysql_init, MySQLInit):
            raise TypeError(f"mysql_init must return a MySQLInit or None, not {mysql_init!r}.")
        engine = MySQLEngine(server, cache, services_log)
        _mysql_state["state"] = prepare_for_session(
            request, engine, mysql_init, mysql_database_name, mysql_data_dir, services_log
        )

    @bounded  # connect_timeout
    def checker() -> bool:
        if not os.path.exists(mysql_socket):
            return False
        try:
            _connect(mysqldb, mysql_socket, connect_timeout=2).close()
        except mysqldb.Error:
            return False
        return True

    arguments = [f"--defaults-file={mysql_defaults_file}"]
    if os.geteuid() == 0:
        arguments.append("--user=root")  # the server refuses to run as root without it
    return watcher_getter(
        server.binary,
        arguments=arguments,
        checker=checker,
        timeout=START_TIMEOUT,
        request=request,
        grace=0,  # the data is thrown away: no clean shutdown needed
    )


@pytest.fixture(scope="session")
def mysql_database_name() -> str:
    """Name of the default test database; override this fixture to choose another."""
    return "pytest_services_test"


@pytest.fixture(scope="session")
def _mysql_kept_databases() -> set[str]:
    """The databases made by ``mysql_database_getter``, which ``mysql_clean`` keeps."""
    return set()


@pytest.fixture(scope="session")
def mysql_database_getter(
    run_services: bool,
    mysql_watcher: Optional[ServiceProcess],
    mysql_socket: str,
    _mysql_kept_databases: set[str],
) -> Optional[Callable[[str], str]]:
    """Function ``getter(name)``: creates database ``name`` if missing, kept by ``mysql_clean``."""
    if not run_services or mysql_watcher is None:
        return None
    mysqldb = _mysqldb()

    def getter(name: str) -> str:
        _mysql_kept_databases.add(name)
        connection = _connect(mysqldb, mysql_socket)
        try:
            connection.cursor().execute(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(name)}")
        finally:
            connection.close()
        return name

    return getter


@pytest.fixture(scope="session")
def mysql_database(
    mysql_database_getter: Optional[Callable[[str], str]], mysql_database_name: str
) -> Optional[str]:
    """Name of the default test database (``mysql_database_name``), created if missing."""
    if mysql_database_getter is None:
        return None
    return mysql_database_getter(mysql_database_name)


@pytest.fixture(scope="session")
def mysql(
    mysql_watcher: Optional[ServiceProcess], mysql_database: Optional[str]
) -> Optional[ServiceProcess]:
    """The running MySQL server process, once the default test database exists."""
    return mysql_watcher


@pytest.fixture(scope="session")
def mysql_connection(
    run_services: bool, mysql: Optional[ServiceProcess], mysql_socket: str
) -> Optional[str]:
    """Connection URL of the running server, e.g. for SQLAlchemy or dj-database-url."""
    if not run_services or mysql is None:
        return None
    return f"mysql://root@localhost/?unix_socket={quote(mysql_socket)}&charset=utf8"
