"""The cache of database data directories: what an entry is, and keeping the cache small.

Plain code, no pytest.  An entry is a folder ``<cache>/<key>`` holding ``data/`` (a data
directory to copy from), any files its engine keeps beside it, and a marker that names the
key and lists every other file of the entry with its size and modification time.  An entry
either is complete -- its marker matches its files -- or it is rebuilt, never used: a file
truncated, rewritten or removed since the build makes it incomplete.  Entries are built by
:func:`pytest_services._db.build.ensure`.

The cache stays small: entries unused for ``UNUSED_ENTRY_DAYS`` go, an entry superseded by a
newer one of the same lineage (the same loaders with other contents: an edited migration)
goes once ``KEEP_PER_LINEAGE`` newer ones exist, and past ``PYTEST_SERVICES_CACHE_MAX_MB``
(default ``DEFAULT_MAX_MB``) the least recently used entries go.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from logging import Logger
from typing import Any, Optional

from pytest_services._db.sparse import Owner, copy_tree, sparsify_tree
from pytest_services._engine.paths import private_dir, shared_user_dir
from pytest_services._reserve.lockfiles import try_lock

__all__ = [
    "BUILD_ID",
    "CACHE_DIR_ENV",
    "DEFAULT_MAX_MB",
    "KEEP_PER_LINEAGE",
    "MARKER",
    "MAX_MB_ENV",
    "SPARE_PREFIX",
    "UNUSED_ENTRY_DAYS",
    "CacheEntry",
    "cache_root",
    "copy_from",
    "discard",
    "entry_files",
    "prune",
    "sweep_abandoned",
    "write_marker",
]

CACHE_DIR_ENV = "PYTEST_SERVICES_CACHE_DIR"
MARKER = "complete.json"
#: The file of an entry that names its build.
BUILD_ID = "build.id"
#: How the names of spare copies of an entry's data directory begin.
SPARE_PREFIX = ".spare-"
#: Entries unused for this many days are removed when a new entry is built.
UNUSED_ENTRY_DAYS = 30
#: Entries of one lineage kept: the newest and the one before (a branch switched back).
KEEP_PER_LINEAGE = 2
#: The cache's size limit in MiB, and the variable that sets another.
MAX_MB_ENV = "PYTEST_SERVICES_CACHE_MAX_MB"
DEFAULT_MAX_MB = 2048


@dataclass(frozen=True)
class CacheEntry:
    """One entry of a cache folder: its key and where it lives."""

    key: str
    path: str

    @classmethod
    def in_folder(cls, cache: str, key: str) -> CacheEntry:
        """The entry ``key`` of the cache folder ``cache``, built or not."""
        return cls(key, os.path.join(cache, key))

    @property
    def data_dir(self) -> str:
        """The data directory that sessions copy."""
        return os.path.join(self.path, "data")

    @property
    def cache(self) -> str:
        """The cache folder that holds the entry."""
        return os.path.dirname(self.path)

    def file(self, name: str) -> str:
        """A file the entry keeps beside its data directory."""
        return os.path.join(self.path, name)

    def manifest(self) -> dict[str, Any]:
        """What the marker says (empty when there is none that can be read)."""
        try:
            with open(self.file(MARKER), encoding="utf-8") as marker:
                found = json.load(marker)
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    def is_complete(self) -> bool:
        """True when the marker names the key, every file it lists is as it was built, and
        the data directory holds no other file."""
        manifest = self.manifest()
        try:
            if manifest["key"] != self.key:
                return False
            listed, found = manifest["files"], entry_files(self.path)
            extra = {name for name in found if name not in listed}
            return all(found.get(name) == value for name, value in listed.items()) and not any(
                name.startswith(f"data{os.sep}") for name in extra
            )
        except (OSError, KeyError, TypeError, AttributeError):
            return False

    def build_id(self) -> Optional[str]:
        """What tells this build of the entry from every other one (written by
        :func:`write_marker`); None when there is none to read."""
        try:
            with open(self.file(BUILD_ID), encoding="ascii") as found:
                return found.read(64).strip() or None
        except (OSError, ValueError):
            return None

    def ensure_build_id(self) -> Optional[str]:
        """:meth:`build_id`, given now to a complete entry built before entries had one
        (a file beside the data directory keeps it complete); None for an incomplete one."""
        found = self.build_id()
        if found is not None or not self.is_complete():
            return found
        temporary = self.file(f".{BUILD_ID}-{uuid.uuid4().hex}")
        try:
            with open(temporary, "x", encoding="ascii") as written:
                written.write(uuid.uuid4().hex)
            with contextlib.suppress(FileExistsError):  # another session gave it one first
                os.link(temporary, self.file(BUILD_ID))
        except OSError:
            return None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        return self.build_id()

    def spares(self, build: Optional[str] = None) -> list[str]:
        """The spare copies of the entry's data directory (:mod:`~pytest_services._db.spare`)
        beside it, those of its build ``build`` only when given; by name."""
        prefix = f"{SPARE_PREFIX}{self.key}@" + (f"{build}@" if build is not None else "")
        try:
            names = os.listdir(self.cache)
        except OSError:
            return []
        return sorted(os.path.join(self.cache, name) for name in names if name.startswith(prefix))

    def mark_used(self) -> None:
        """Keep the entry from being pruned for another ``UNUSED_ENTRY_DAYS``."""
        with contextlib.suppress(OSError):
            os.utime(self.file(MARKER))


def cache_root(memory_root_dir: str) -> str:
    """The user's cache folder shared by all sessions and servers, created private (0700);
    each server keeps its entries in a subfolder.

    Relative paths (in ``PYTEST_SERVICES_CACHE_DIR`` too) are taken from the current folder.
    """
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return private_dir(os.path.abspath(configured))
    parent = os.path.abspath(memory_root_dir)
    return shared_user_dir(os.path.join(parent, f"pytest-services-cache-{os.getuid()}"), "cache")


def entry_files(folder: str) -> dict[str, list[int]]:
    """Every file below ``folder`` but the marker: ``[size, mtime_ns]`` by relative path."""
    found: dict[str, list[int]] = {}
    _list_files(folder, "", found)
    found.pop(MARKER, None)
    return found


def _list_files(folder: str, prefix: str, found: dict[str, list[int]]) -> None:
    # One scandir per folder (links to folders are not followed, nor listed), as it is
    # checked on every cache hit: a data directory holds a thousand files or more.
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir():
                if not entry.is_symlink():
                    _list_files(entry.path, f"{prefix}{entry.name}{os.sep}", found)
                continue
            info = entry.stat(follow_symlinks=False)
            found[f"{prefix}{entry.name}"] = [info.st_size, info.st_mtime_ns]


def write_marker(folder: str, key: str, manifest: dict[str, Any]) -> None:
    """Make the build folder's data sparse, then write its marker: the last step of a build."""
    sparsify_tree(os.path.join(folder, "data"))
    with open(os.path.join(folder, BUILD_ID), "w", encoding="ascii") as build_id:
        build_id.write(uuid.uuid4().hex)
    manifest = {**manifest, "key": key, "files": entry_files(folder)}
    with open(os.path.join(folder, MARKER), "w", encoding="utf-8") as marker:
        json.dump(manifest, marker)


def discard(path: str) -> None:
    """Remove a folder: renamed first, so nobody takes a half-removed folder for a good one."""
    if not os.path.lexists(path):
        return
    trash = f"{os.path.dirname(path)}/.trash-{os.path.basename(path)}-{os.getpid()}"
    try:
        os.rename(path, trash)
    except OSError:
        trash = path
    shutil.rmtree(trash, ignore_errors=True)


def copy_from(source: Callable[[], str], data_dir: str, owner: Optional[Owner] = None) -> None:
    """Fill ``data_dir`` with a copy of the data directory that ``source()`` returns, which
    belongs to ``owner`` when given (see :func:`~pytest_services._db.sparse.copy_tree`).

    Another session may find the entry damaged and replace it while it is copied: then the
    copy fails, and is made again from what ``source()`` returns next.
    """
    try:
        copy_tree(source(), data_dir, owner)
    except OSError:
        shutil.rmtree(data_dir, ignore_errors=True)
        copy_tree(source(), data_dir, owner)


def sweep_abandoned(cache: str, held: str) -> None:
    """Remove the build and trash folders of builds whose session died (nobody holds the
    lock of their key), whatever key they were for; ``held`` is the key whose lock the
    caller holds, so its leftovers are abandoned too."""
    for name in os.listdir(cache):
        if not name.startswith((".build-", ".trash-")):
            continue
        key = name.split("-", 1)[1].rsplit("-", 1)[0]
        if key == held:
            shutil.rmtree(os.path.join(cache, name), ignore_errors=True)
            continue
        fd = try_lock(os.path.join(cache, f"{key}.lock"))
        if fd is None:
            continue  # being built right now
        try:
            shutil.rmtree(os.path.join(cache, name), ignore_errors=True)
        finally:
            os.close(fd)


def _disk_usage(path: str) -> int:
    used = 0
    for parent, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                used += os.lstat(os.path.join(parent, name)).st_blocks * 512
    return used


def prune(cache: str, keep: str, log: Logger) -> None:
    """Remove entries unused for long, superseded ones, and the least recently used past the
    cache's size limit; never ``keep`` (the entry just built or used)."""
    entries = []
    for name in os.listdir(cache):
        entry = CacheEntry.in_folder(cache, name)
        if name.startswith(".") or name == keep or not os.path.isdir(entry.path):
            continue
        marker = entry.file(MARKER)
        try:
            used = os.stat(marker if os.path.exists(marker) else entry.path).st_mtime
        except OSError:
            continue
        entries.append((used, entry))
    entries.sort(key=lambda found: found[0], reverse=True)  # the most recently used first
    kept = CacheEntry.in_folder(cache, keep)
    lineage = kept.manifest().get("lineage")
    same_lineage = 1
    limit = int(os.environ.get(MAX_MB_ENV, "") or DEFAULT_MAX_MB) * 1024 * 1024
    total = _disk_usage(kept.path) + sum(map(_disk_usage, kept.spares()))
    for used, entry in entries:
        reason = ""
        if used < time.time() - UNUSED_ENTRY_DAYS * 86400:
            reason = f"unused for {UNUSED_ENTRY_DAYS} days"
        elif lineage is not None and entry.manifest().get("lineage") == lineage:
            same_lineage += 1
            if same_lineage > KEEP_PER_LINEAGE:
                reason = "superseded by newer states of the same loaders"
        if not reason:
            total += _disk_usage(entry.path) + sum(map(_disk_usage, entry.spares()))
            if total > limit:
                reason = f"the cache is larger than {limit // 1024 // 1024} MiB ({MAX_MB_ENV})"
        if reason:
            log.info("removing the cache entry %s: %s", entry.path, reason)
            discard(entry.path)
            for spare in entry.spares():
                discard(spare)
            with contextlib.suppress(OSError):
                os.unlink(f"{entry.path}.lock")
