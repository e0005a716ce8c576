"""How a Django ``DATABASES`` entry reaches a PostgreSQL server of this plugin.

Plain code; Django is imported inside the functions.  Only *where* the database is changes
(the server's socket folder as ``HOST``, its ``PORT``, the superuser ``postgres`` without a
password, no TLS); *how* the project talks to it stays: an entry whose engine speaks
PostgreSQL (Django's, PostGIS's, or one based on them) keeps its engine and ``OPTIONS``
(``isolation_level``, ``options``, ``server_side_binding``, ``pool``...) but for the options
that name a server, a service file or an account; an entry of another engine (SQLite...)
becomes Django's PostgreSQL backend.  ``TEST["CHARSET"]`` is the encoding of the test
database, as with Django's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Union

from pytest_services._db.django import DEFAULT, Redirect

__all__ = [
    "LOCATION_OPTIONS",
    "SERVER_ENGINE",
    "apply_test_charset",
    "redirect",
    "redirect_to_dsn",
    "speaks_postgresql",
]

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


def apply_test_charset() -> None:
    """Give the default database the encoding ``TEST["CHARSET"]`` names, before anything is
    in it: an encoding is chosen when a database is created, so it is created again (from
    ``template0``, with the ``C`` locale, which suits every encoding)."""
    from django.core.exceptions import ImproperlyConfigured
    from django.db import DatabaseError, connections

    connection = connections[DEFAULT]
    charset = (connection.settings_dict.get("TEST") or {}).get("CHARSET")
    if not charset:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_encoding_to_char(encoding) = pg_encoding_to_char(pg_char_to_encoding(%s))"
            " FROM pg_database WHERE datname = current_database()",
            [charset],
        )
        (same,) = cursor.fetchone()
    if same:
        return
    name = connection.ops.quote_name(connection.settings_dict["NAME"])
    connection.close()
    encoding = "'{}'".format(str(charset).replace("'", "''"))  # no parameters in DDL
    with connection._nodb_cursor() as cursor:
        cursor.execute(f"DROP DATABASE {name}")
        try:
            cursor.execute(
                f"CREATE DATABASE {name} WITH ENCODING {encoding} TEMPLATE template0 "
                "LC_COLLATE 'C' LC_CTYPE 'C'"
            )
        except DatabaseError as exc:
            raise ImproperlyConfigured(
                f'DATABASES["default"]["TEST"]["CHARSET"] = {charset!r} cannot be the '
                f"encoding of the test database: {str(exc).splitlines()[0]}"
            ) from exc
