"""Start the PostgreSQL server of the migrated state while the session collects its tests.

What :mod:`pytest_services.django_db`'s hooks do.  When a session (or pytest-xdist worker)
starts and Django's default database goes to its own PostgreSQL, the key of the migrated
state is known already (computed as the report header computes it): if the cache holds that
state, its server starts in the background (:mod:`pytest_services._db.postgresql.early`)
and psycopg and Django's PostgreSQL backend are imported meanwhile, so that the server is
ready when the first test asks for it.  Once the tests are collected (and ``-k``/``-m``
deselected some), a session none of whose tests uses Django's database stops it.  The
fixtures check that the server is the one they would start, and start their own when the
guess was wrong (an overridden ``django_migrations_key``, ``memory_root_dir``...).
"""

from __future__ import annotations

import tempfile
from typing import Optional

import pytest

from pytest_services import folders
from pytest_services._db.django import DEFAULT, uses_migrations
from pytest_services._db.django_engines import POSTGRESQL
from pytest_services._db.django_key import migrations_key, state_key
from pytest_services._options import port_range_option
from pytest_services._reserve.ports import get_free_port, unlock_port
from pytest_services.log import get_logger
from pytest_services.service import get_worker_id, is_xdist_worker, services_enabled

__all__ = ["begin", "finish", "used"]

#: The default of ``postgresql_database_name``.
_DATABASE = "pytest_services_test"
#: The default of ``lock_resource_timeout``.
_LOCK_TIMEOUT = 20.0


def _may_run_tests(config: pytest.Config) -> bool:
    """Whether this session starts servers and runs tests: not a pytest-xdist controller,
    nor a session that only collects, shows fixtures or (re)builds states."""
    option = config.option
    if not services_enabled(config) or config.getoption("services_prepare", False):
        return False
    if not is_xdist_worker(config) and getattr(option, "dist", "no") != "no":
        return False  # the controller: its workers run the tests
    shows = ("collectonly", "showfixtures", "show_fixtures_per_test", "setuponly", "setupplan")
    return not any(getattr(option, name, False) for name in shows)


def begin(config: pytest.Config, engine: str, digest: Optional[str], run: str) -> None:
    """Start the server early when Django's database goes to this session's PostgreSQL and
    no option rebuilds its state."""
    if engine != POSTGRESQL or digest is None or not _may_run_tests(config):
        return
    if config.getvalue("create_db"):
        return
    from pytest_services._db.postgresql import driver, early
    from pytest_services._db.postgresql.server import postgresql_cache_dir

    worker = get_worker_id(config)
    log = get_logger(worker)
    try:
        parent = folders.memory_root(tempfile.gettempdir())
        key = migrations_key(digest, uses_migrations(not config.getvalue("nomigrations")))
        key = state_key(key, postgresql_cache_dir(parent), False, run, record=False)
        lock_dir = folders.shared_user_dir(folders.default_lock_dir(), "locks")
    except Exception:  # the fixtures say what is wrong
        return
    port_range = port_range_option(config)
    driver.import_meanwhile("django.db.backends.postgresql.base")  # the fixtures wait for it
    early.begin(
        early.EarlyServer(
            parent,
            worker,
            key,
            _DATABASE,
            lambda: get_free_port(lock_dir, log, _LOCK_TIMEOUT, port_range=port_range),
            lambda port: unlock_port(port, lock_dir, log),
            log,
        )
    )


def used(session: pytest.Session) -> bool:
    """Whether a test of ``session`` uses Django's default database."""
    try:
        from pytest_django.fixtures import _get_databases_for_setup

        aliases, _serialized = _get_databases_for_setup(session.items)
    except (ImportError, TypeError, AttributeError):
        return True  # the fixtures decide
    return DEFAULT in aliases


def finish() -> None:
    """Stop the early server unless the fixtures use it."""
    from pytest_services._db.postgresql import early

    early.finish()
