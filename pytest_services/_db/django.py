"""pytest-django's test database on a prepared state: what every database engine shares.

Plain code; pytest and Django are only handed in.  An engine says how a ``DATABASES`` entry
reaches its server (:data:`Redirect`: where changes, how the project talks to the database
stays); :func:`redirect_default` applies that to ``default`` and to the aliases that mirror
it.  The loader :func:`migrate` makes runs Django's ``migrate`` (and ``createcachetable``,
as Django's own test database creation does) on the preparing server, naming the migration
that fails; :func:`setup_test_databases` hands every alias the tests use to Django's
``setup_databases``, ``default`` included (its dependencies and mirrors resolve as usual),
but takes the prepared database as ``default``'s test database instead of creating one.
The key of the state is :mod:`pytest_services._db.django_key`'s.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Optional

from pytest_services.exceptions import DjangoMigrationError

__all__ = [
    "DEFAULT",
    "Redirect",
    "disable_migrations",
    "migrate",
    "mirrors_of_default",
    "redirect_default",
    "setup_test_databases",
    "uses_migrations",
]

DEFAULT = "default"

#: How an engine turns a ``DATABASES`` entry into one for its server (a new dict).
Redirect = Callable[[Mapping[str, Any]], dict[str, Any]]


def mirrors_of_default() -> list[str]:
    """The aliases whose ``TEST["MIRROR"]`` leads (directly or through others) to default."""
    from django.conf import settings

    databases = settings.DATABASES

    def target(alias: str, seen: frozenset[str] = frozenset()) -> Optional[str]:
        mirror = (databases.get(alias, {}).get("TEST") or {}).get("MIRROR")
        if not mirror or alias in seen:
            return alias
        return target(mirror, seen | {alias})

    return [alias for alias in databases if alias != DEFAULT and target(alias) == DEFAULT]


def redirect_default(redirect: Redirect, database: str) -> dict[str, dict[str, Any]]:
    """Point ``default`` (as database ``database``, which is also its test database) and
    its mirrors at the engine's server, in place; return the entries as they were."""
    from django.conf import settings

    saved = {}
    for alias in [DEFAULT, *mirrors_of_default()]:
        config = settings.DATABASES[alias]
        saved[alias] = copy.deepcopy(config)
        redirected = redirect(config)
        redirected["TEST"] = dict(config.get("TEST") or {})
        if alias == DEFAULT:
            redirected["NAME"] = redirected["TEST"]["NAME"] = database
        else:
            redirected["NAME"] = database  # what setup_databases makes it anyway
        config.clear()
        config.update(redirected)
        _forget(alias)  # its next use builds a connection for the new engine
    return saved


def _forget(alias: str) -> None:
    from django.db import connections

    with contextlib.suppress(Exception):
        connections[alias].close()
    with contextlib.suppress(AttributeError, KeyError):
        del connections[alias]


def _restore(saved: Mapping[str, Mapping[str, Any]]) -> None:
    from django.conf import settings

    for alias, config in saved.items():
        _forget(alias)
        settings.DATABASES[alias].clear()
        settings.DATABASES[alias].update(config)


def uses_migrations(use_migrations: bool) -> bool:
    """Whether ``default`` is built by its migrations: not with ``--nomigrations``
    (``use_migrations`` False) nor with ``TEST["MIGRATE"] = False``."""
    from django.conf import settings

    test = settings.DATABASES[DEFAULT].get("TEST") or {}
    return use_migrations and test.get("MIGRATE", True) is not False


def disable_migrations() -> None:
    """Build every database from the models (syncdb), as ``--nomigrations`` asks."""
    from django.apps import apps
    from django.conf import settings

    settings.MIGRATION_MODULES = {app.label: None for app in apps.get_app_configs()}


@contextlib.contextmanager
def _without_migrations(disabled: bool) -> Iterator[None]:
    from django.conf import settings

    if not disabled:
        yield
        return
    saved = settings.MIGRATION_MODULES
    disable_migrations()
    try:
        yield
    finally:
        settings.MIGRATION_MODULES = saved


def _migrate_command() -> Any:
    """Django's ``migrate`` command, remembering which migration it is applying."""
    from django.core.management.commands import migrate as migrate_module

    class Migrate(migrate_module.Command):  # type: ignore[misc]
        applying: Optional[str] = None

        def migration_progress_callback(self, action: str, *args: Any, **kwargs: Any) -> None:
            migration = args[0] if args else kwargs.get("migration")
            if action == "apply_start" and migration is not None:
                self.applying = f"{migration.app_label}.{migration.name}"
            elif action == "apply_success":
                self.applying = None
            super().migration_progress_callback(action, *args, **kwargs)

    return Migrate()


def _failing_code(exc: BaseException) -> str:
    """Where the project's code raised ``exc``: the innermost frame outside Django and this
    package, preferring one outside installed packages (the database driver...)."""
    import django

    ours = (os.path.dirname(django.__file__), os.path.dirname(os.path.dirname(__file__)))
    found: dict[bool, str] = {}
    trace = exc.__traceback__
    while trace is not None:
        code = trace.tb_frame.f_code
        if not code.co_filename.startswith(ours):
            installed = any(part in code.co_filename for part in ("-packages/", "/lib/python"))
            found[installed] = f" in {code.co_name} ({code.co_filename}:{trace.tb_lineno})"
        trace = trace.tb_next
    return found.get(False) or found.get(True) or ""


def migrate(
    unblock: Callable[[], Any],
    point: Callable[..., Redirect],
    use_migrations: bool = True,
    prepare: Optional[Callable[[], None]] = None,
) -> Callable[..., None]:
    """A loader that runs Django's ``migrate`` on the database its keyword arguments name:
    ``point(**where)`` gives the :data:`Redirect` there and ``where["database"]`` names the
    database; ``prepare()`` runs on it first (the engine's ``TEST`` charset...); ``unblock``
    is pytest-django's ``django_db_blocker.unblock``."""

    def django_migrate(**where: str) -> None:
        from django.core.management import call_command

        with unblock(), _without_migrations(not uses_migrations(use_migrations)):
            saved = redirect_default(point(**where), where["database"])
            command = _migrate_command()
            try:
                if prepare is not None:
                    prepare()
                call_command(command, verbosity=0, interactive=False, run_syncdb=True)
                call_command("createcachetable", database=DEFAULT, verbosity=0)
            except Exception as exc:
                what = f"migration {command.applying}" if command.applying else "migrate"
                raise DjangoMigrationError(
                    f"Django's {what} failed{_failing_code(exc)}: {type(exc).__name__}: {exc}"
                ) from exc
            finally:
                _restore(saved)

    django_migrate.__qualname__ = "django_migrate"
    return django_migrate


def _aliases_for(items: list[Any]) -> tuple[set[str], set[str]]:
    """The database aliases the tests use, and those they want serialized."""
    try:  # pytest-django knows best; its helper is not public, so fall back on all aliases
        from pytest_django.fixtures import _get_databases_for_setup

        aliases, serialized = _get_databases_for_setup(items)
        return set(aliases), set(serialized)
    except (ImportError, TypeError, AttributeError):
        from django.db import connections

        return set(connections), set()


@contextlib.contextmanager
def _prepared_as_test_database(alias: str) -> Iterator[None]:
    """Django's test database creation for ``alias`` takes the database as it is."""
    from django.db import connections

    creation = connections[alias].creation

    def create_test_db(*args: Any, **kwargs: Any) -> str:
        name: str = creation.connection.settings_dict["NAME"]
        if kwargs.get("serialize", False):  # Django < 5.0 serializes here, not in its caller
            creation.connection._test_serialized_contents = creation.serialize_db_to_string()
        return name

    creation.create_test_db = create_test_db
    try:
        yield
    finally:
        del creation.create_test_db


def setup_test_databases(
    items: list[Any], verbosity: int, blocker: Any, keepdb: bool = False
) -> Iterator[None]:
    """Set up the databases ``items`` use as Django does, with the prepared ``default``
    database as its own test database; a generator for a yield fixture.  ``keepdb`` is
    pytest-django's ``--reuse-db`` for the other aliases."""
    from django.db import connections
    from django.test.utils import setup_databases, teardown_databases

    aliases, serialized = _aliases_for(items)
    verbosity = max(verbosity, 0)
    with blocker.unblock(), _prepared_as_test_database(DEFAULT):
        created = setup_databases(
            verbosity,
            interactive=False,
            keepdb=keepdb,
            aliases=aliases | {DEFAULT},
            serialized_aliases=serialized,
        )
    yield
    default = connections[DEFAULT]
    others = [entry for entry in created if entry[0] is not default]
    if others and not keepdb:
        with blocker.unblock():
            teardown_databases(others, verbosity=verbosity)
