"""How a Django ``DATABASES`` entry reaches a PostgreSQL server of this plugin.

Plain code; Django is imported inside the functions.  Only *where* the database is changes
(the server's socket folder as ``HOST``, its ``PORT``, the superuser ``postgres`` without a
password, no TLS); *how* the project talks to it stays: an entry whose engine speaks
PostgreSQL (Django's, PostGIS's, or one based on them) keeps its engine and ``OPTIONS``
(``isolation_level``, ``options``, ``server_side_binding``, ``pool``...) but for the options
that name a server, a service file or an account; an entry of another engine (SQLite...)
becomes Django's PostgreSQL backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Union

from pytest_services._db.django import Redirect

__all__ = ["LOCATION_OPTIONS", "SERVER_ENGINE", "redirect", "redirect_to_dsn", "speaks_postgresql"]

#: Django's PostgreSQL backend, for projects whose own engine does not speak PostgreSQL.
SERVER_ENGINE = "django.db.backends.postgresql"
#: libpq options that say where the server is, who logs in, or how the link is secured.
LOCATION_OPTIONS = frozenset(
    {
        "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "service",
        "sslmode", "sslcert", "sslkey", "sslrootcert", "sslcrl", "sslpassword",
        "target_session_attrs", "assume_role",
    }
)  # fmt: skip


def speaks_postgresql(engine: str) -> bool:
    """True when the Django backend ``engine`` talks to PostgreSQL."""
    from django.db.utils import load_backend

    try:
        return bool(load_backend(engine).DatabaseWrapper.vendor == "postgresql")
    except Exception:  # no such backend, or one that cannot load: not PostgreSQL's
        return False


def redirect(host: str, port: Union[int, str]) -> Redirect:
    """The :data:`~pytest_services._db.django.Redirect` to the server whose socket is in
    the folder ``host``, on ``port``."""

    def redirected(config: Mapping[str, Any]) -> dict[str, Any]:
        engine = config.get("ENGINE") or ""
        if speaks_postgresql(engine):
            options = {
                name: value
                for name, value in (config.get("OPTIONS") or {}).items()
                if name not in LOCATION_OPTIONS
            }
        else:
            engine, options = SERVER_ENGINE, {}
        entry = {name: value for name, value in config.items() if name != "OPTIONS"}
        entry.update(ENGINE=engine, HOST=host, PORT=str(port), USER="postgres", PASSWORD="")
        entry["OPTIONS"] = options
        return entry

    return redirected


def redirect_to_dsn(dsn: str, database: str = "") -> Redirect:
    """The redirect to the server a ``PostgreSQLInit`` loader's ``dsn`` names."""
    from psycopg.conninfo import conninfo_to_dict

    values = conninfo_to_dict(dsn)
    return redirect(str(values["host"]), str(values["port"]))
