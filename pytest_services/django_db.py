"""pytest-django's test database on this session's (or worker's) private server, migrated once.

Opt in with the ini option ``services_django_db = true`` (the plugin then registers this
module after pytest-django, so that its fixtures take the place of pytest-django's).  The
server follows the default database's ``ENGINE``: PostgreSQL for a PostgreSQL project,
MariaDB for any other; ``services_django_db = postgresql`` or ``= mariadb`` chooses it.

* ``mysql_init`` becomes ``django_mysql_init`` (``postgresql_init`` becomes
  ``django_postgresql_init``): the default database is migrated (with
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

from pytest_services._db import django_early as early
from pytest_services._db.cache import CacheEntry
from pytest_services._db.django import (
    DEFAULT,
    disable_migrations,
    migrate,
    redirect_default,
    setup_test_databases,
    uses_migrations,
)
from pytest_services._db.django_engines import (
    ENGINES,
    MARIADB,
    POSTGRESQL,
    DjangoEngine,
    choose,
    parse_choice,
)
from pytest_services._db.django_key import migrations_key, settings_digest, state_key
from pytest_services._db.postgresql.clean import PostgreSQLCleaner
from pytest_services._db.reset import reset
from pytest_services._db.state import DatabaseInit
from pytest_services._options import verbosity
from pytest_services.folders import memory_root
from pytest_services.mysql import MySQLInit
from pytest_services.postgresql import PostgreSQLInit
from pytest_services.process import ServiceProcess
from pytest_services.service import reached_through

__all__ = [
    "django_db_modify_db_settings",
    "django_db_setup",
    "django_migrations_key",
    "django_mysql_init",
    "django_postgresql_init",
    "migrate_loader",
    "mysql_init",
    "postgresql_clean",
    "postgresql_init",
]

# A test that uses the database errs at setup once the server died.
for _server in ("mysql_watcher", "postgresql_watcher"):
    reached_through(_server, "django_db_setup")

#: The settings digest of the key, taken before the tests change any setting.
_SETTINGS = pytest.StashKey[str]()
#: This run's token: the generation ``--create-db`` records; the same in every worker.
_RUN = pytest.StashKey[str]()
_RUN_INPUT = "services_django_run"
#: The server the test database goes to (a key of ``ENGINES``).
_ENGINE = pytest.StashKey[str]()
#: The default of ``mysql_database_name`` and ``postgresql_database_name``, for the header.
_DATABASE = "pytest_services_test"


def pytest_configure(config: pytest.Config) -> None:
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})
    config.stash[_RUN] = str(
        workerinput.get(_RUN_INPUT) or workerinput.get("testrunuid") or uuid.uuid4().hex
    )
    from django.conf import settings

    engine = ""
    if settings.configured:
        config.stash[_SETTINGS] = settings_digest(
            config.getini("services_django_key_ignore"), str(config.rootpath)
        )
        engine = str(settings.DATABASES.get(DEFAULT, {}).get("ENGINE") or "")
    choice = parse_choice(config.getini("services_django_db")) or MARIADB  # checked already
    config.stash[_ENGINE] = choose(choice, engine)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Start the server of the migrated state while the session collects its tests."""
    config = session.config
    engine, digest = config.stash.get(_ENGINE, MARIADB), config.stash.get(_SETTINGS, None)
    early.begin(config, engine, digest, config.stash[_RUN])


def pytest_collection_finish(session: pytest.Session) -> None:
    """Stop the server started early when no test uses the database after all."""
    if not session.items or not early.used(session):
        early.finish()


def pytest_sessionfinish() -> None:
    early.finish()


def _engine(config: pytest.Config) -> DjangoEngine:
    return ENGINES[config.stash.get(_ENGINE, MARIADB)]()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Every pytest-xdist worker of the run gets the controller's run token."""
    node.workerinput[_RUN_INPUT] = node.config.stash[_RUN]


def pytest_report_header(config: pytest.Config) -> list[str]:
    if verbosity(config) < 1:
        return []
    engine = _engine(config)
    head = (
        "services django: DATABASES['default'] is redirected to the session's "
        "(each pytest-xdist worker's) own"
    )
    try:
        server, cache, base = engine.describe(memory_root(tempfile.gettempdir()))
        use_migrations = uses_migrations(not config.getvalue("nomigrations"))
        key = migrations_key(config.stash[_SETTINGS], use_migrations)
    except Exception as exc:  # shown, not raised: the fixtures raise it where it matters
        return [f"{head} {engine.title}, but: {type(exc).__name__}: {exc}"]
    rebuild = bool(config.getvalue("create_db"))
    init = engine.init_class(key=state_key(key, cache, rebuild, config.stash[_RUN], record=False))
    state = init.state_key(_DATABASE)
    if rebuild:
        status = "--create-db: rebuilt once in this run"
    elif _is_cached(base, state):
        status = "cached: reused"
    else:
        status = "not cached: built on first use"
    return [
        f"{head} {server}, over a unix socket",
        f"services django: migrated state {state} ({status})",
    ]


def _is_cached(base: CacheEntry, state: str) -> bool:
    """Whether the cache holds the prepared state ``state`` on the server's ``base`` entry
    (as :func:`~pytest_services._db.prepare.prepared_entry` names it)."""
    return CacheEntry.in_folder(base.cache, f"{base.key}-state-{state}").is_complete()


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


def migrate_loader(
    unblock: Callable[[], Any], use_migrations: bool = True, engine: str = MARIADB
) -> Callable[..., None]:
    """A loader (of ``MySQLInit``, or of ``PostgreSQLInit`` with ``engine="postgresql"``)
    that runs Django's ``migrate`` on the database it is given; ``unblock`` is
    pytest-django's ``django_db_blocker.unblock``."""
    parts = ENGINES[engine]()
    return migrate(unblock, parts.point, use_migrations=use_migrations, prepare=parts.prepare)


def _django_init(request: pytest.FixtureRequest, engine: str) -> DatabaseInit:
    parts = ENGINES[engine]()
    key = state_key(
        request.getfixturevalue("django_migrations_key"),
        _cache_dir(engine, request.getfixturevalue("memory_root_dir")),
        request.getfixturevalue("django_db_createdb"),
        request.config.stash[_RUN],
        record=True,
    )
    loader = migrate_loader(
        request.getfixturevalue("django_db_blocker").unblock,
        request.getfixturevalue("django_db_use_migrations"),
        engine,
    )
    return parts.init_class(load=[loader], key=key)


def _cache_dir(engine: str, memory_root_dir: str) -> str:
    if engine == POSTGRESQL:
        from pytest_services._db.postgresql.server import postgresql_cache_dir

        return postgresql_cache_dir(memory_root_dir)
    from pytest_services._db.mysql.server import mysql_cache_dir

    return mysql_cache_dir(memory_root_dir)


@pytest.fixture(scope="session")
def django_mysql_init(request: pytest.FixtureRequest) -> MySQLInit:
    """The ``MySQLInit`` that migrates the Django project's default database once."""
    init = _django_init(request, MARIADB)
    assert isinstance(init, MySQLInit)
    return init


@pytest.fixture(scope="session")
def django_postgresql_init(request: pytest.FixtureRequest) -> PostgreSQLInit:
    """The ``PostgreSQLInit`` that migrates the Django project's default database once."""
    init = _django_init(request, POSTGRESQL)
    assert isinstance(init, PostgreSQLInit)
    return init


@pytest.fixture(scope="session")
def mysql_init(request: pytest.FixtureRequest) -> Optional[MySQLInit]:
    """The migrated Django database (``django_mysql_init``) when the test database is on
    MariaDB, else None; override to add loaders."""
    if request.config.stash.get(_ENGINE, MARIADB) != MARIADB:
        return None
    init: MySQLInit = request.getfixturevalue("django_mysql_init")
    return init


@pytest.fixture(scope="session")
def postgresql_init(request: pytest.FixtureRequest) -> Optional[PostgreSQLInit]:
    """The migrated Django database (``django_postgresql_init``) when the test database is
    on PostgreSQL, else None; override to add loaders."""
    if request.config.stash.get(_ENGINE, MARIADB) != POSTGRESQL:
        return None
    init: PostgreSQLInit = request.getfixturevalue("django_postgresql_init")
    return init


def _needs_services(server: Optional[ServiceProcess], title: str) -> ServiceProcess:
    if server is None:
        pytest.fail(
            f"services_django_db puts Django's test database on pytest-services' {title}, but "
            "services are off: run under pytest-xdist, with --run-services, or set "
            "run_services = true in the ini file.",
            pytrace=False,
        )
    return server


@pytest.fixture(scope="session")
def django_db_modify_db_settings(request: pytest.FixtureRequest) -> None:
    """Point Django's ``default`` database and its test mirrors at this session's server
    (MariaDB or PostgreSQL, as ``services_django_db`` chose)."""
    engine = _engine(request.config)
    _needs_services(request.getfixturevalue(engine.server), engine.title)
    where = [request.getfixturevalue(name) for name in engine.where]
    database = request.getfixturevalue(engine.database)
    assert database is not None
    redirect_default(engine.redirect(*where), database)


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
    """Use the migrated database on the session's server as Django's test database, and
    set up the other aliases the tests use as pytest-django does."""
    if not django_db_use_migrations:
        disable_migrations()
    yield from setup_test_databases(
        request.session.items,
        int(request.config.getoption("verbose") or 0),
        django_db_blocker,
        keepdb=django_db_keepdb and not django_db_createdb,
    )


@pytest.fixture
def postgresql_clean(
    _postgresql_cleaner: Optional[PostgreSQLCleaner], django_db_blocker: Any
) -> None:
    """Put the default database in its prepared state (the migrated one) before the test;
    Django's idle connections are closed first, as the reset may end them."""
    from django.db import connections

    with django_db_blocker.unblock():
        for connection in connections.all():
            if not connection.in_atomic_block:
                connection.close()
    reset(_postgresql_cleaner, "postgres")
