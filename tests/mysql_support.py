"""What the MySQL test files share: the server binary, and a cache with its base entry."""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_services._db.mysql import cache as _mysql_cache
from pytest_services._db.mysql import server as _mysql_server
from pytest_services.folders import memory_root, private_dir
from pytest_services.process import ServiceError

#: The MySQL client libraries installed (the plugin uses the first).
MYSQL_DRIVERS = [name for name in ("MySQLdb", "pymysql") if importlib.util.find_spec(name)]

try:
    SERVER: str | None = _mysql_server.find_server_binary()
except ServiceError:
    SERVER = None

#: Skips the tests of a module when no server is installed (CI installs one: no skip there).
needs_server = pytest.mark.skipif(
    SERVER is None, reason=f"no MySQL/MariaDB server: {_mysql_server.INSTALL_HINT}"
)


def base_cache(prefix: str) -> Iterator[Path]:
    """A cache folder in memory with the server's base entry; removed afterwards."""
    assert SERVER is not None
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=memory_root(tempfile.gettempdir())))
    mysql_cache = private_dir(root / "mysql")
    version = _mysql_server._server_version(SERVER, mysql_cache)
    server = _mysql_server.MySQLServer(SERVER, version)
    _mysql_cache.cached_data_dir(server, mysql_cache, logging.getLogger(__name__))
    yield root
    shutil.rmtree(root, ignore_errors=True)
