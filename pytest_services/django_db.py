"""pytest-django's test database on this session's (or worker's) private MariaDB, migrated once.

Opt in with the ini option ``services_django_db = true`` (the plugin then registers this
module after pytest-django, so that its fixtures take the place of pytest-django's):

* ``mysql_init`` becomes ``django_mysql_init``: the default database is migrated (with
  Django's ``migrate``, ``run_syncdb`` included) once per set of migrations and kept in the
  data-directory cache; every worker and later run starts from a copy, and no test run
  runs the migration framework while that state is current;
* ``django_db_modify_db_settings`` points the ``default`` database at the server's unix
  socket, and ``django_db_setup`` uses the migrated database as the test database instead
  of creating one.  Other database aliases are set up by Django as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Optional

import pytest

from pytest_services._db.django import DEFAULT, migrate, migrations_key, setup_test_databases
from pytest_services.mysql import MySQLInit
from pytest_services.process import ServiceProcess

__all__ = [
    "django_db_modify_db_settings",
    "django_db_setup",
    "django_migrations_key",
    "django_mysql_init",
    "migrate_loader",
    "mysql_init",
]


def django_migrations_key() -> str:
    """A digest of what decides the migrated state: Django's version, the installed apps,
    and the files of their migrations (models of apps without migrations)."""
    return migrations_key()


def _point_default_at(socket: str, database: str) -> None:
    """Make ``DATABASES['default']`` the server's database ``database``, in place."""
    from django.conf import settings
    from django.db import connections

    config = settings.DATABASES[DEFAULT]
    config.update(
        ENGINE="django.db.backends.mysql",
        NAME=database,
        USER="root",
        PASSWORD="",
        HOST=socket,
        PORT="",
        OPTIONS={"charset": "utf8mb4"},
    )
    config.setdefault("TEST", {})["NAME"] = database
    connections[DEFAULT].close()
    del connections[DEFAULT]  # the next use builds a connection for the new engine


def migrate_loader(unblock: Callable[[], Any]) -> Callable[..., None]:
    """A ``MySQLInit`` loader that runs Django's ``migrate`` on the database it is given;
    ``unblock`` is pytest-django's ``django_db_blocker.unblock``."""
    return migrate(unblock, _point_default_at)


@pytest.fixture(scope="session")
def django_mysql_init(django_db_blocker: Any) -> MySQLInit:
    """The ``MySQLInit`` that migrates the Django project's default database once."""
    return MySQLInit(load=[migrate_loader(django_db_blocker.unblock)], key=django_migrations_key())


@pytest.fixture(scope="session")
def mysql_init(django_mysql_init: MySQLInit) -> Optional[MySQLInit]:
    """The migrated Django database (``django_mysql_init``); override to add loaders."""
    return django_mysql_init


def _needs_services(mysql: Optional[ServiceProcess]) -> ServiceProcess:
    if mysql is None:
        pytest.fail(
            "services_django_db puts Django's test database on pytest-services' MariaDB, but "
            "services are off: run under pytest-xdist, with --run-services, or set "
            "run_services = true in the ini file.",
            pytrace=False,
        )
    return mysql


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    mysql: Optional[ServiceProcess], mysql_socket: str, mysql_database: Optional[str]
) -> None:
    """Point Django's ``default`` database at this session's MariaDB (its unix socket)."""
    _needs_services(mysql)
    assert mysql_database is not None
    _point_default_at(mysql_socket, mysql_database)


@pytest.fixture(scope="session")
def django_db_setup(
    request: pytest.FixtureRequest,
    django_test_environment: None,
    django_db_blocker: Any,
    django_db_modify_db_settings: None,
) -> Iterator[None]:
    """Use the migrated database on the session's MariaDB as Django's test database."""
    yield from setup_test_databases(request.session.items, request.config, django_db_blocker)
