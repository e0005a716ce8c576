"""The MySQL client library the plugin's own connections use: mysqlclient, else PyMySQL.

Plain code, no pytest.  mysqlclient (``MySQLdb``, a C extension) is preferred when it is
installed; PyMySQL (pure Python, nothing to compile) serves where it is not.  Everything
the plugin does over a connection -- creating databases, preparing states, ``mysql_clean``,
the readiness check -- goes through :func:`connect`, and ``mysql_url`` names the driver
that :func:`url_scheme` reports.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["DRIVERS", "INSTALL_HINT", "connect", "error", "module", "url_scheme"]

#: The client libraries tried in turn: module, SQLAlchemy dialect name.
DRIVERS = (("MySQLdb", "mysqldb"), ("pymysql", "pymysql"))
INSTALL_HINT = (
    "MySQL fixtures need mysqlclient (MySQLdb) or PyMySQL: "
    "pip install 'pytest-services[mysql]' (or 'pytest-services[pymysql]')"
)


def _find() -> tuple[Any, str]:
    for name, dialect in DRIVERS:
        try:
            return importlib.import_module(name), dialect
        except ImportError:
            continue
    raise ImportError(INSTALL_HINT)


def module() -> Any:
    """The client library's module (``MySQLdb`` or ``pymysql``); ``ImportError`` naming
    both when neither is installed."""
    return _find()[0]


def error() -> type[Exception]:
    """The base class of the library's errors (``MySQLdb.Error`` or ``pymysql.Error``)."""
    found: type[Exception] = module().Error
    return found


def url_scheme() -> str:
    """The SQLAlchemy URL scheme of the library: ``mysql+mysqldb`` or ``mysql+pymysql``."""
    return f"mysql+{_find()[1]}"


def connect(socket: str, database: str = "", **options: Any) -> Any:
    """A connection as root over the unix socket ``socket`` (utf8mb4), to ``database``
    when given; ``options`` are the library's (``autocommit``, ``connect_timeout``...)."""
    library, dialect = _find()
    options.setdefault("charset", "utf8mb4")
    if database:
        options["db" if dialect == "mysqldb" else "database"] = database
    if dialect == "pymysql":  # as mysqlclient does by default: the reset sends two at once
        multi = importlib.import_module("pymysql.constants.CLIENT").MULTI_STATEMENTS
        options["client_flag"] = options.get("client_flag", 0) | multi
    return library.connect(unix_socket=socket, user="root", **options)
