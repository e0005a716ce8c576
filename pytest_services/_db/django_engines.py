"""Which server pytest-django's test database goes to, and what each one brings.

Plain code, no pytest.  ``services_django_db`` is off, follows the project's default
``ENGINE`` (a PostgreSQL one gets PostgreSQL, any other MariaDB), or names the server
(:func:`parse_choice`, :func:`choose`).  A :class:`DjangoEngine` is what the generic glue
(:mod:`pytest_services._db.django`) needs of an engine: the names of its fixtures, how a
``DATABASES`` entry reaches it, the ``DatabaseInit`` class its state is made with, and
what the report header says about it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Optional

from pytest_services._db.cache import CacheEntry
from pytest_services._db.django import Redirect
from pytest_services._db.state import DatabaseInit

__all__ = [
    "CHOICES",
    "ENGINES",
    "FOLLOW",
    "MARIADB",
    "POSTGRESQL",
    "DjangoEngine",
    "choose",
    "parse_choice",
]

FOLLOW, MARIADB, POSTGRESQL = "follow", "mariadb", "postgresql"
#: What ``services_django_db`` accepts (any case), and what each means (None: off).
CHOICES: Mapping[str, Optional[str]] = {
    "true": FOLLOW, "yes": FOLLOW, "1": FOLLOW, "on": FOLLOW,
    "false": None, "no": None, "0": None, "off": None, "": None,
    "postgresql": POSTGRESQL, "mariadb": MARIADB,
}  # fmt: skip


def parse_choice(value: Any) -> Optional[str]:
    """:data:`FOLLOW`, :data:`MARIADB`, :data:`POSTGRESQL`, or None (off) for the ini
    value; ValueError naming the accepted values otherwise."""
    text = str(value).strip().lower() if not isinstance(value, bool) else str(value).lower()
    if text not in CHOICES:
        raise ValueError(
            f"services_django_db = {value} is not one of: true (follow the default "
            "database's ENGINE), postgresql, mariadb, false (also yes/no, 1/0)"
        )
    return CHOICES[text]


def choose(choice: str, engine: str) -> str:
    """The server for ``choice`` and the default database's ``ENGINE``."""
    if choice != FOLLOW:
        return choice
    return POSTGRESQL if "postgresql" in engine or "postgis" in engine else MARIADB


@dataclass(frozen=True)
class DjangoEngine:
    """What the generic glue needs of one engine; fixtures are named, not imported."""

    #: As the report header and messages name the server.
    title: str
    #: The fixture of the running server (None when services are off).
    server: str
    #: The ``*_init`` fixture the plugin overrides, and its Django version.
    init: str
    django_init: str
    #: The fixtures whose values :attr:`redirect` takes (as keyword arguments, in order).
    where: tuple[str, ...]
    #: The fixture naming the default database on the server.
    database: str
    #: ``redirect(*where)``: how a ``DATABASES`` entry reaches the session's server.
    redirect: Callable[..., Redirect]
    #: ``point(**loader_kwargs)``: the same for the preparing server, from a loader's arguments.
    point: Callable[..., Redirect]
    #: Run on the preparing server's database before ``migrate`` (the ``TEST`` charset...).
    prepare: Optional[Callable[[], None]]
    init_class: type[DatabaseInit]
    #: ``describe(memory_root)``: the server as the header shows it, its cache folder and
    #: base cache entry.
    describe: Callable[[str], tuple[str, str, CacheEntry]]


def _describe_mysql(memory_root: str) -> tuple[str, str, CacheEntry]:
    from pytest_services._db.mysql.cache import base_entry
    from pytest_services._db.mysql.server import get_server, mysql_cache_dir

    server = get_server(memory_root)
    cache = mysql_cache_dir(memory_root)
    version = ".".join(str(part) for part in server.version)
    flavour = "MariaDB" if server.is_mariadb else "MySQL"
    return f"{flavour} {version} ({server.binary})", cache, base_entry(server, cache)


def _describe_postgresql(memory_root: str) -> tuple[str, str, CacheEntry]:
    from pytest_services._db.postgresql.cache import base_entry
    from pytest_services._db.postgresql.server import get_server, postgresql_cache_dir

    server = get_server()
    cache = postgresql_cache_dir(memory_root)
    version = server.version_text().rsplit(" ", 1)[-1]
    text = f"PostgreSQL {version} ({server.program('postgres')})"
    return text, cache, base_entry(server, cache)


def _mysql() -> DjangoEngine:
    from pytest_services._db.mysql import django as mysql_django
    from pytest_services._db.mysql.init import MySQLInit

    return DjangoEngine(
        title="MariaDB",
        server="mysql",
        init="mysql_init",
        django_init="django_mysql_init",
        where=("mysql_socket",),
        database="mysql_database",
        redirect=mysql_django.redirect,
        point=lambda socket, database: mysql_django.redirect(socket),
        prepare=mysql_django.apply_test_charset,
        init_class=MySQLInit,
        describe=_describe_mysql,
    )


def _postgresql() -> DjangoEngine:
    from pytest_services._db.postgresql import django as pg_django
    from pytest_services._db.postgresql.init import PostgreSQLInit

    return DjangoEngine(
        title="PostgreSQL",
        server="postgresql",
        init="postgresql_init",
        django_init="django_postgresql_init",
        where=("postgresql_host", "postgresql_port"),
        database="postgresql_database",
        redirect=pg_django.redirect,
        point=pg_django.redirect_to_dsn,
        prepare=pg_django.apply_test_charset,
        init_class=PostgreSQLInit,
        describe=_describe_postgresql,
    )


#: The engines by the name :func:`choose` gives.
ENGINES: Mapping[str, Callable[[], DjangoEngine]] = {MARIADB: _mysql, POSTGRESQL: _postgresql}
