"""Copy the migrated PostgreSQL state for a worker's server while the worker waits for tests.

What :mod:`pytest_services.django_db`'s hooks do.  Once a session has collected its tests (and
deselected what ``-k``/``-m`` leave out), it knows whether any of them uses Django's
database; if so, and the database goes to this session's own PostgreSQL, the data directory
of the migrated state its key names (computed as the report header computes it) is copied
in the background (:mod:`pytest_services._db.early_copy`) while a pytest-xdist worker waits
for its first tests, and psycopg is imported meanwhile; the server fixture moves the copy in
instead of copying.  No server is
started here: that stays the fixture's, as do every check and the copy itself when the
guess was wrong (an overridden ``django_migrations_key``, ``memory_root_dir``...).
"""

from __future__ import annotations

import tempfile
from typing import Optional

import pytest

from pytest_services import folders
from pytest_services._db import early_copy
from pytest_services._db.cache import CacheEntry
from pytest_services._db.django import DEFAULT, uses_migrations
from pytest_services._db.django_engines import POSTGRESQL
from pytest_services._db.django_key import migrations_key, state_key
from pytest_services.service import get_worker_id, services_enabled

__all__ = ["begin", "wanted"]

#: The default of ``postgresql_database_name``.
_DATABASE = "pytest_services_test"


def wanted(session: pytest.Session, engine: str, digest: Optional[str]) -> bool:
    """Whether ``session`` will put Django's default database on its own PostgreSQL and
    take it from the cache: a test of it uses the database, and no option rebuilds it."""
    config = session.config
    if engine != POSTGRESQL or digest is None or not session.items:
        return False
    if not services_enabled(config) or config.getoption("services_prepare", False):
        return False
    if config.getvalue("create_db"):
        return False
    try:
        from pytest_django.fixtures import _get_databases_for_setup

        aliases, _serialized = _get_databases_for_setup(session.items)
    except (ImportError, TypeError, AttributeError):
        return False
    return DEFAULT in aliases


def _entry(config: pytest.Config, digest: str, run: str) -> Optional[CacheEntry]:
    """The cache entry of the migrated state, as the fixtures will most likely name it."""
    from pytest_services._db.postgresql.cache import base_entry
    from pytest_services._db.postgresql.init import PostgreSQLInit
    from pytest_services._db.postgresql.server import get_server, postgresql_cache_dir

    cache = postgresql_cache_dir(folders.memory_root(tempfile.gettempdir()))
    key = migrations_key(digest, uses_migrations(not config.getvalue("nomigrations")))
    init = PostgreSQLInit(key=state_key(key, cache, False, run, record=False))
    base = base_entry(get_server(), cache)
    return CacheEntry.in_folder(cache, f"{base.key}-state-{init.state_key(_DATABASE)}")


def begin(session: pytest.Session, engine: str, digest: Optional[str], run: str) -> None:
    """Start the early copy when :func:`wanted`."""
    if digest is None or not wanted(session, engine, digest):
        return
    from pytest_services._db.postgresql import driver
    from pytest_services._db.postgresql.cache import hand_over
    from pytest_services._db.postgresql.server import account

    config = session.config
    server_account = account()
    try:
        scratch = folders._session_dir(
            folders.memory_root(tempfile.gettempdir()), get_worker_id(config)
        )
    except Exception:  # no room for it: the fixture copies as usual
        return

    # The fixtures wait for them if they are not over by then.
    driver.import_meanwhile("django.db.backends.postgresql.base")
    early_copy.start(
        lambda: _entry(config, digest, run),
        scratch,
        lambda path: hand_over(server_account, path),
        folders._release_session_dir,
    )
