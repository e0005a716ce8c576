"""The resources this process holds, and taking and releasing them.

Whole numbers (ports, displays, anything numbered) are bytes of a lock table: one open file
per kind of resource, whatever their count.  Ports and displays belong to the whole host,
so their tables lie in a folder every user shares (``/tmp``, or ``$PYTEST_SERVICES_HOST_LOCK_DIR``
for containers that share another one); other kinds, and resources that are not whole numbers,
stay in the user's private ``lock_dir``.  Where the host-wide table cannot be used (another
user planted something else in its place), the user's own table serves, with a warning.
"""

from __future__ import annotations

import os
import threading
import warnings
from typing import Any

from pytest_services._engine.paths import (
    StrPath,
    private_dir,
)
from pytest_services._reserve.lockfiles import (
    TABLE_END,
    LockTable,
    open_table,
    release,
    try_lock,
)
from pytest_services.exceptions import (
    LockError,
    LockWarning,
)

HOST_LOCK_DIR_ENV = "PYTEST_SERVICES_HOST_LOCK_DIR"
DEFAULT_HOST_LOCK_DIR = "/tmp"
#: Kinds of resources that belong to the whole host rather than to one user.
HOST_WIDE = frozenset({"port", "display"})
#: Whole numbers below this are bytes of a lock table; anything else gets a file of its own.
TABLE_SIZE = TABLE_END


_guard = threading.RLock()
_owner = os.getpid()
_tables: dict[str, LockTable] = {}
_held: dict[tuple[str, str], set[Any]] = {}
_files: dict[tuple[str, str, Any], int] = {}
_known_dirs: set[str] = set()


def host_lock_dir() -> str:
    """The folder of the host-wide lock tables; the same for every user and session."""
    return os.path.abspath(os.environ.get(HOST_LOCK_DIR_ENV) or DEFAULT_HOST_LOCK_DIR)


def ensure_lock_dir(lock_dir: StrPath) -> None:
    """Create and check ``lock_dir`` once per process (again if it disappears)."""
    path = os.fspath(lock_dir)
    if path not in _known_dirs or not os.path.isdir(path):
        private_dir(path)
        _known_dirs.add(path)


def _adopt() -> None:
    """A forked child shares its parent's open lock files: start afresh with its own."""
    global _owner
    if _owner != os.getpid():
        _owner = os.getpid()
        for table in _tables.values():
            table.close()
        for fd in _files.values():
            os.close(fd)
        _tables.clear()
        _held.clear()
        _files.clear()


def _key(name: str, lock_dir: StrPath) -> tuple[str, str]:
    return ("" if name in HOST_WIDE else os.fspath(lock_dir), name)


def _in_table(resource: Any) -> bool:
    return type(resource) is int and 0 <= resource < TABLE_SIZE


def resource_path(name: str, resource: object, lock_dir: StrPath) -> str:
    """The lock file of a resource that is not kept in a table."""
    return os.path.join(os.fspath(lock_dir), f"{name}-{resource}.lock")


def table(name: str, lock_dir: StrPath) -> LockTable:
    """The lock table of ``name`` resources, opened once per process."""
    own = os.path.join(os.fspath(lock_dir), f"{name}.table")
    path = os.path.join(host_lock_dir(), f"pytest-services-{name}.table")
    path = path if name in HOST_WIDE else own
    found = _tables.get(path)
    if found is not None:
        return found
    try:
        found = LockTable(open_table(path, shared=name in HOST_WIDE), path)
    except LockError as exc:
        if name not in HOST_WIDE:
            raise
        warnings.warn(
            f"{exc} Reserving {name}s in {own} instead, which only your own sessions see: "
            f"other users' sessions on this host may pick the same {name}s. Remove {path}, "
            f"or set {HOST_LOCK_DIR_ENV} to a folder every user may write to.",
            LockWarning,
            stacklevel=4,
        )
        ensure_lock_dir(lock_dir)
        found = _tables.get(own) or LockTable(open_table(own, shared=False), own)
        _tables[own] = found
    _tables[path] = found  # a table that could not be used is not tried again
    return found


def held(name: str, lock_dir: StrPath) -> set[Any]:
    """The ``name`` resources this process holds (a live set: copy it to keep it)."""
    with _guard:
        _adopt()
        return _held.setdefault(_key(name, lock_dir), set())


def take(name: str, resource: Any, lock_dir: StrPath) -> bool:
    """Reserve ``resource`` for this process unless some process holds it; never waits."""
    with _guard:
        mine = held(name, lock_dir)
        if resource in mine:
            return False
        if _in_table(resource):
            if not table(name, lock_dir).lock(resource):
                return False
        else:
            ensure_lock_dir(lock_dir)
            fd = try_lock(resource_path(name, resource, lock_dir))
            if fd is None:
                return False
            os.ftruncate(fd, 0)
            os.write(fd, f"held by pid {os.getpid()}\n".encode())
            _files[(*_key(name, lock_dir), resource)] = fd
        mine.add(resource)
        return True


def drop(name: str, resource: Any, lock_dir: StrPath) -> bool:
    """Release ``resource`` if this process holds it; tell whether it did."""
    with _guard:
        mine = held(name, lock_dir)
        if resource not in mine:
            return False
        mine.discard(resource)
        if _in_table(resource):
            table(name, lock_dir).unlock(resource)
        else:
            fd = _files.pop((*_key(name, lock_dir), resource))
            release(fd, resource_path(name, resource, lock_dir), remove=True)
        return True


def is_taken(name: str, resource: Any, lock_dir: StrPath) -> bool:
    """Tell whether some process (this one included) holds ``resource``; keeps no lock."""
    with _guard:
        if resource in held(name, lock_dir):
            return True
        if _in_table(resource):
            lock_table = table(name, lock_dir)
            if lock_table.lock(resource):
                lock_table.unlock(resource)
                return False
            return True
        path = resource_path(name, resource, lock_dir)
        if not os.path.exists(path):
            return False
        fd = try_lock(path)
        if fd is None:
            return True
        os.close(fd)
        return False


def taken(name: str, lock_dir: StrPath) -> list[Any]:
    """Every ``name`` resource held on the host (this process's included), in order."""
    with _guard:
        found = set(held(name, lock_dir))
        found.update(table(name, lock_dir).held_elsewhere())
        prefix, suffix = f"{name}-", ".lock"
        for entry in os.listdir(lock_dir):
            if entry.startswith(prefix) and entry.endswith(suffix):
                text = entry[len(prefix) : -len(suffix)]
                value = int(text) if text.isdigit() else text
                if not _in_table(value) and is_taken(name, value, lock_dir):
                    found.add(value)
    return sorted(found, key=lambda value: (isinstance(value, str), value))
