"""How a Django ``DATABASES`` entry reaches a MariaDB/MySQL server of this plugin.

Plain code; Django is imported inside the functions.  Only *where* the database is changes
(the unix socket, user ``root`` without a password, no TLS); *how* the project talks to it
stays: an entry whose engine speaks MySQL keeps its engine and ``OPTIONS``
(``init_command``, ``isolation_level``, ``sql_mode``, ``charset``...) but for the options
that name a server or an account; an entry of another engine (SQLite...) becomes Django's
MySQL backend with ``charset=utf8mb4``.  ``TEST["CHARSET"]``/``TEST["COLLATION"]`` give the
test database its character set, as Django's own creation of it does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_services._db.django import DEFAULT, Redirect

__all__ = ["LOCATION_OPTIONS", "SERVER_ENGINE", "apply_test_charset", "redirect", "speaks_mysql"]

#: Django's MySQL backend, for projects whose own engine does not speak MySQL.
SERVER_ENGINE = "django.db.backends.mysql"
#: Client options that say where the server is, who logs in, or how the link is secured.
LOCATION_OPTIONS = frozenset(
    {
        "host", "port", "unix_socket", "named_pipe", "user", "passwd", "password", "db",
        "database", "ssl", "ssl_mode",
    }
)  # fmt: skip


def speaks_mysql(engine: str) -> bool:
    """True when the Django backend ``engine`` talks to MySQL (Django's, or one based on it)."""
    from django.db.utils import load_backend

    try:
        return bool(load_backend(engine).DatabaseWrapper.vendor == "mysql")
    except Exception:  # no such backend, or one that cannot load: not MySQL's
        return False


def redirect(socket: str) -> Redirect:
    """The :data:`~pytest_services._db.django.Redirect` to the server on ``socket``."""

    def redirected(config: Mapping[str, Any]) -> dict[str, Any]:
        engine = config.get("ENGINE") or ""
        if speaks_mysql(engine):
            options = {
                name: value
                for name, value in (config.get("OPTIONS") or {}).items()
                if name not in LOCATION_OPTIONS
            }
            if "read_default_file" in options:  # its [client] group may name a server and a user
                options.update(host="localhost", unix_socket=socket, user="root", password="")
        else:
            engine, options = SERVER_ENGINE, {"charset": "utf8mb4"}
        entry = {name: value for name, value in config.items() if name != "OPTIONS"}
        entry.update(ENGINE=engine, HOST=socket, PORT="", USER="root", PASSWORD="")
        entry["OPTIONS"] = options
        return entry

    return redirected


def apply_test_charset() -> None:
    """Give the default database the ``TEST`` charset and collation of its settings."""
    from django.db import connections

    connection = connections[DEFAULT]
    suffix = connection.creation.sql_table_creation_suffix()
    if not suffix:
        return
    name = connection.ops.quote_name(connection.settings_dict["NAME"])
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER DATABASE {name} {suffix}")
