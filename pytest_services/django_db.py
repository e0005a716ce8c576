"""pytest-django's test database on this session's (or worker's) private MariaDB, migrated once.

Opt in with the ini option ``services_django_db = true`` (the plugin then registers this
module after pytest-django, so that its fixtures take the place of pytest-django's):

* ``mysql_init`` becomes ``django_mysql_init``: the default database is migrated (with
  Django's ``migrate``, ``run_syncdb`` included) once per ``django_migrations_key`` and
  kept in the data-directory cache; every worker and later run starts from a copy, and no
  test run runs the migration framework while that state is current; ``--create-db``
  builds it once more, ``--nomigrations`` builds it from the models;
* ``django_db_modify_db_settings`` points the ``default`` database and its test mirrors
  at the server's unix socket, keeping how the project talks to it (its ``OPTIONS``), and
  ``django_db_setup`` hands every alias the tests use to Django's ``setup_databases``, with
  the migrated database as ``default``'s test database.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Optional

import pytest

from pytest_services._db.cache import CacheEntry
from pytest_services._db.django import (
    disable_migrations,
    migrate,
    redirect_default,
    setup_test_databases,
    uses_migrations,
)
from pytest_services._db.django_key import migrations_key, settings_digest, state_key
from pytest_services._db.mysql.cache import base_entry
from pytest_services._db.mysql.django import apply_test_charset, redirect
from pytest_services._db.mysql.server import MySQLServer, get_server, mysql_cache_dir
from pytest_services._options import verbosity
from pytest_services.folders import memory_root
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

#: The settings digest of the key, taken before the tests change any setting.
_SETTINGS = pytest.StashKey[str]()
#: This run's token: the generation ``--create-db`` records; the same in every worker.
_RUN = pytest.StashKey[str]()
_RUN_INPUT = "services_django_run"
#: The default of ``mysql_database_name``, for the report header.
_DATABASE = "pytest_services_test"


def pytest_configure(config: pytest.Config) -> None:
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})
    config.stash[_RUN] = str(
        workerinput.get(_RUN_INPUT) or workerinput.get("testrunuid") or uuid.uuid4().hex
    )
    from django.conf import settings

    if settings.configured:
        config.stash[_SETTINGS] = settings_digest(
            config.getini("services_django_key_ignore"), str(config.rootpath)
        )


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Every pytest-xdist worker of the run gets the controller's run token."""
    node.workerinput[_RUN_INPUT] = node.config.stash[_RUN]


def pytest_report_header(config: pytest.Config) -> list[str]:
    if verbosity(config) < 1:
        return []
    head = (
        "services django: DATABASES['default'] is redirected to the session's "
        "(each pytest-xdist worker's) own"
    )
    try:
        server = get_server(memory_root(tempfile.gettempdir()))
        cache = mysql_cache_dir(memory_root(tempfile.gettempdir()))
        use_migrations = uses_migrations(not config.getvalue("nomigrations"))
        key = migrations_key(config.stash[_SETTINGS], use_migrations)
    except Exception as exc:  # shown, not raised: the fixtures raise it where it matters
        return [f"{head} MariaDB/MySQL, but: {type(exc).__name__}: {exc}"]
    rebuild = bool(config.getvalue("create_db"))
    init = MySQLInit(key=state_key(key, cache, rebuild, config.stash[_RUN], record=False))
    state = init.state_key(_DATABASE)
    if rebuild:
        status = "--create-db: rebuilt once in this run"
    elif _is_cached(server, cache, state):
        status = "cached: reused"
    else:
        status = "not cached: built on first use"
    version = ".".join(str(part) for part in server.version)
    flavour = "MariaDB" if server.is_mariadb else "MySQL"
    return [
        f"{head} {flavour} {version} ({server.binary}), over a unix socket",
        f"services django: migrated state {state} ({status})",
    ]


def _is_cached(server: MySQLServer, cache: str, state: str) -> bool:
    """Whether the cache holds the prepared state ``state`` of ``server`` (as
    :func:`~pytest_services._db.prepare.prepared_entry` names it)."""
    base = base_entry(server, cache)
    return CacheEntry.in_folder(cache, f"{base.key}-state-{state}").is_complete()


@pytest.fixture(scope="session")
def django_migrations_key(request: pytest.FixtureRequest, django_db_use_migrations: bool) -> str:
    """The key of the migrated state: Django's version, the installed apps, their migration
    files (models without migrations or with ``--nomigrations``) and every setting but
    those ``services_django_key_ignore`` names; override it to add what else decides it."""
    digest = request.config.stash.get(_SETTINGS, None)
    if digest is None:
        digest = settings_digest(
            request.config.getini("services_django_key_ignore"), str(request.config.rootpath)
        )
    return migrations_key(digest, uses_migrations(django_db_use_migrations))


def migrate_loader(unblock: Callable[[], Any], use_migrations: bool = True) -> Callable[..., None]:
    """A ``MySQLInit`` loader that runs Django's ``migrate`` on the database it is given;
    ``unblock`` is pytest-django's ``django_db_blocker.unblock``."""
    return migrate(
        unblock,
        lambda socket, database: redirect(socket),
        use_migrations=use_migrations,
        prepare=apply_test_charset,
    )


@pytest.fixture(scope="session")
def django_mysql_init(
    request: pytest.FixtureRequest,
    django_db_blocker: Any,
    django_db_use_migrations: bool,
    django_db_createdb: bool,
    django_migrations_key: str,
    memory_root_dir: str,
) -> MySQLInit:
    """The ``MySQLInit`` that migrates the Django project's default database once."""
    key = state_key(
        django_migrations_key,
        mysql_cache_dir(memory_root_dir),
        django_db_createdb,
        request.config.stash[_RUN],
        record=True,
    )
    loader = migrate_loader(django_db_blocker.unblock, django_db_use_migrations)
    return MySQLInit(load=[loader], key=key)


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
    """Point Django's ``default`` database and its test mirrors at this session's MariaDB."""
    _needs_services(mysql)
    assert mysql_database is not None
    redirect_default(redirect(mysql_socket), mysql_database)


@pytest.fixture(scope="session")
def django_db_setup(
    request: pytest.FixtureRequest,
    django_test_environment: None,
    django_db_blocker: Any,
    django_db_use_migrations: bool,
    django_db_keepdb: bool,
    django_db_createdb: bool,
    django_db_modify_db_settings: None,
) -> Iterator[None]:
    """Use the migrated database on the session's MariaDB as Django's test database, and
    set up the other aliases the tests use as pytest-django does."""
    if not django_db_use_migrations:
        disable_migrations()
    yield from setup_test_databases(
        request.session.items,
        int(request.config.getoption("verbose") or 0),
        django_db_blocker,
        keepdb=django_db_keepdb and not django_db_createdb,
    )
