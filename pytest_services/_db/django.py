"""pytest-django's test database on a prepared state: what every database engine shares.

Plain code; pytest and Django are only handed in.  The migrated state is keyed by
:func:`migrations_key`, built by the loader :func:`migrate` makes (which points Django's
``default`` database at the preparing server in the engine's own way, migrates, and puts
the settings back), and :func:`setup_test_databases` uses it as the test database while
Django sets up the other aliases as usual.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT", "migrate", "migrations_key", "setup_test_databases"]

DEFAULT = "default"


def migrations_key() -> str:
    """A digest of what decides the migrated state: Django's version, the installed apps,
    and the files of their migrations (models of apps without migrations)."""
    import django
    from django.apps import apps
    from django.db.migrations.loader import MigrationLoader

    digest = hashlib.sha256(json.dumps(django.VERSION[:3]).encode())
    for app in sorted(apps.get_app_configs(), key=lambda app: app.label):
        digest.update(f"\0app {app.label} {app.name}".encode())
        module_name, _explicit = MigrationLoader.migrations_module(app.label)
        files: list[Path] = []
        try:
            module = importlib.import_module(module_name) if module_name else None
        except ImportError:
            module = None
        if module is not None and getattr(module, "__file__", None):
            files = sorted(Path(module.__file__).parent.rglob("*.py"))  # type: ignore[arg-type]
        elif getattr(app, "models_module", None) is not None:
            files = [Path(app.models_module.__file__)]  # syncdb builds these tables
        for path in files:
            digest.update(f"\0{path.name}\0".encode() + path.read_bytes())
    return digest.hexdigest()[:32]


def migrate(unblock: Callable[[], Any], point: Callable[..., None]) -> Callable[..., None]:
    """A loader that runs Django's ``migrate`` on the database its keyword arguments name:
    ``point(**where)`` makes ``DATABASES['default']`` that database; ``unblock`` is
    pytest-django's ``django_db_blocker.unblock``."""

    def django_migrate(**where: str) -> None:
        from django.conf import settings
        from django.core.management import call_command

        saved = copy.deepcopy(settings.DATABASES[DEFAULT])
        with unblock():
            point(**where)
            try:
                call_command("migrate", verbosity=0, interactive=False, run_syncdb=True)
            finally:
                from django.db import connections

                connections[DEFAULT].close()
                settings.DATABASES[DEFAULT].clear()
                settings.DATABASES[DEFAULT].update(saved)
                del connections[DEFAULT]

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


def setup_test_databases(items: list[Any], config: Any, blocker: Any) -> Iterator[None]:
    """Use the prepared ``default`` database as Django's test database for ``items``, and
    set up the other aliases they use as Django does; a generator for a yield fixture."""
    from django.db import connections
    from django.test.utils import setup_databases, teardown_databases

    aliases, serialized = _aliases_for(items)
    others = aliases - {DEFAULT}
    verbosity = int(config.getoption("verbose") or 0)
    with blocker.unblock():
        if DEFAULT in serialized:
            connection = connections[DEFAULT]
            connection._test_serialized_contents = connection.creation.serialize_db_to_string()
        created = setup_databases(verbosity, interactive=False, aliases=others) if others else None
    yield
    if created is not None:
        with blocker.unblock():
            teardown_databases(created, verbosity=verbosity)
