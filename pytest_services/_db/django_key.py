"""The key of a Django project's migrated state, and the rebuilds ``--create-db`` asks for.

Plain code; Django is imported inside the functions.  The key is a digest of what decides
what ``migrate`` writes into the database:

* Django's version, and for every installed app its label and module, and either its
  migration files or (for an app without migrations, or every app with ``--nomigrations``)
  the state of its models as Django's migration framework describes it;
* every setting, because a ``post_migrate`` handler or a data migration may read any of
  them (django-guardian's ``ANONYMOUS_USER_NAME`` decides a row), except those in
  :data:`IGNORED_SETTINGS` and those the project names; of ``DATABASES`` only how the
  default database is used counts (engine, ``OPTIONS``, ``TEST`` charset...), not where
  it is.

What the key cannot see (an environment variable, a file a handler reads) is what
``--create-db`` is for: it records a new *generation* for the key in the cache folder, so
that the state is built again once in that run and later runs use the rebuilt one.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import re
import tempfile
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Optional

__all__ = [
    "IGNORED_SETTINGS",
    "LOCATION_KEYS",
    "generation",
    "migrations_key",
    "record_generation",
    "settings_digest",
    "stable",
    "state_key",
    "with_generation",
]

#: Settings left out of the key: they often differ from run to run or worker to worker
#: (a random ``SECRET_KEY`` for tests) and decide nothing that ``migrate`` writes.
IGNORED_SETTINGS = frozenset({"SECRET_KEY", "SECRET_KEY_FALLBACKS"})
#: The parts of a ``DATABASES`` entry that say where the database is, not how it is used.
LOCATION_KEYS = frozenset({"NAME", "HOST", "PORT", "USER", "PASSWORD"})

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_MAX_DEPTH = 12


def stable(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON data that is the same in every process: callables and classes by
    their dotted name, lazy strings as text, other objects by ``repr`` without addresses."""
    if depth > _MAX_DEPTH:
        return "..."
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Path):
        return os.fspath(value)
    if isinstance(value, Mapping):
        pairs = [[stable(k, depth + 1), stable(v, depth + 1)] for k, v in value.items()]
        return {"mapping": sorted(pairs, key=lambda pair: json.dumps(pair, sort_keys=True))}
    if isinstance(value, (set, frozenset)):
        items = [stable(item, depth + 1) for item in value]
        return {"set": sorted(items, key=lambda item: json.dumps(item, sort_keys=True))}
    if isinstance(value, (list, tuple)):
        return [stable(item, depth + 1) for item in value]
    if isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        module = getattr(value, "__module__", "?")
        return f"{module}:{getattr(value, '__qualname__', getattr(value, '__name__', '?'))}"
    if isinstance(value, types.ModuleType):
        return f"module {value.__name__}"
    promise = _promise_type()
    if promise is not None and isinstance(value, promise):
        return str(value)
    return _ADDRESS.sub("", f"{type(value).__module__}.{type(value).__qualname__} {value!r}")


def _promise_type() -> Optional[type]:
    try:
        from django.utils.functional import Promise
    except ImportError:  # pragma: no cover - Django is there whenever this runs
        return None
    promise: type = Promise
    return promise


def default_database_usage(config: Mapping[str, Any]) -> dict[str, Any]:
    """How a ``DATABASES`` entry uses its database: the entry without its location."""
    usage = {name: value for name, value in config.items() if name not in LOCATION_KEYS}
    test = dict(usage.get("TEST") or {})
    test.pop("NAME", None)
    usage["TEST"] = test
    return usage


def settings_digest(ignore: Iterable[str] = (), root: Optional[str] = None) -> str:
    """A digest of the project's settings as they are now, without ``ignore`` and
    :data:`IGNORED_SETTINGS`, and with only the default database's usage of ``DATABASES``.

    Paths inside ``root`` (the project's folder) count relative to it, so that the same
    project checked out elsewhere, on another machine, gets the same digest."""
    from django.conf import settings

    left_out = IGNORED_SETTINGS | set(ignore)
    material: dict[str, Any] = {}
    for name in sorted(dir(settings)):
        if not name.isupper() or name in left_out:
            continue
        try:
            value = getattr(settings, name)
        except Exception as exc:  # a lazy setting that cannot be computed here
            value = f"unreadable: {type(exc).__name__}"
        if name == "DATABASES":
            value = default_database_usage(value.get("default", {}))
        material[name] = stable(value)
    text = json.dumps(material, sort_keys=True)
    if root:
        text = text.replace(json.dumps(os.path.abspath(root))[1:-1], "<project>")
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _model_states(app: Any) -> Any:
    """The models of ``app`` as the migration framework sees them: what syncdb creates."""
    from django.db.migrations.state import ModelState

    described = []
    for model in sorted(app.get_models(include_auto_created=True), key=lambda m: m.__name__):
        state = ModelState.from_model(model)
        fields = [[name, stable(field.deconstruct()[1:])] for name, field in state.fields.items()]
        described.append(
            [state.name, fields, stable(state.options), stable(state.bases), model._meta.db_table]
        )
    return described


def _migration_files(app: Any) -> Optional[dict[str, bytes]]:
    """The files of ``app``'s migrations by relative path, or None when it has none."""
    from django.db.migrations.loader import MigrationLoader

    module_name, _explicit = MigrationLoader.migrations_module(app.label)
    if not module_name:
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    location = getattr(module, "__file__", None)
    if not location:
        return None
    folder = Path(location).parent
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*.py")}


#: The keys computed by this process: its report header, the early server and the fixture
#: ask for the same one (a session's Django keeps the migrations it first imported).
_KEYS: dict[tuple[str, bool], str] = {}


def migrations_key(settings: str, use_migrations: bool = True) -> str:
    """The key of the migrated default database, given the :func:`settings_digest`;
    computed once per process."""
    key = _KEYS.get((settings, use_migrations))
    if key is None:
        key = _KEYS[settings, use_migrations] = _migrations_key(settings, use_migrations)
    return key


def _migrations_key(settings: str, use_migrations: bool) -> str:
    import django
    from django.apps import apps

    digest = hashlib.sha256(json.dumps([django.VERSION[:3], use_migrations, settings]).encode())
    for app in sorted(apps.get_app_configs(), key=lambda app: app.label):
        digest.update(f"\0app {app.label} {app.name}".encode())
        files = _migration_files(app) if use_migrations else None
        if files is None:
            digest.update(json.dumps(_model_states(app), sort_keys=True).encode())
            continue
        for relative, content in sorted(files.items()):
            digest.update(f"\0{relative}\0".encode() + content)
    return digest.hexdigest()[:32]


def _generation_file(cache: str, key: str) -> str:
    return os.path.join(cache, f".django-generation-{key}")


def generation(cache: str, key: str) -> str:
    """The generation of ``key``'s state that the last ``--create-db`` recorded, or ""."""
    try:
        with open(_generation_file(cache, key), encoding="utf-8") as recorded:
            return recorded.read().strip()
    except OSError:
        return ""


def record_generation(cache: str, key: str, token: str) -> None:
    """Make ``token`` the generation of ``key``'s state, for this run and later ones."""
    path = _generation_file(cache, key)
    handle, temporary = tempfile.mkstemp(prefix=".django-generation-", dir=cache)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as written:
            written.write(token)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def with_generation(key: str, token: str) -> str:
    """The key of generation ``token`` of ``key``'s state ("" is the first generation)."""
    if not token:
        return key
    return hashlib.sha256(f"{key}\0generation {token}".encode()).hexdigest()[:32]


def state_key(key: str, cache: str, rebuild: bool, token: str, record: bool = True) -> str:
    """The key of the state a run uses: with ``rebuild`` (``--create-db``) the run's
    ``token`` becomes the generation of ``key``'s state (recorded in ``cache`` when
    ``record``); otherwise the last recorded generation holds."""
    if rebuild:
        if record:
            record_generation(cache, key, token)
        return with_generation(key, token)
    return with_generation(key, generation(cache, key))
