"""The cache of database data directories: one entry protocol for every server and state.

Plain code, no pytest.  An entry is a folder ``<cache>/<key>`` holding ``data/`` (a data
directory to copy from) and a marker that names the key and lists every file's size.  It is
built next to its place under a kernel lock (so concurrent sessions build it once), made
sparse, and renamed into place in one step: an entry either is complete or does not exist,
and one whose marker does not match its files is rebuilt, never used.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from logging import Logger
from typing import Any

from pytest_services._db.sparse import copy_tree, sparsify_tree
from pytest_services._engine.paths import private_dir, shared_user_dir
from pytest_services._reserve.lockfiles import file_lock

__all__ = [
    "BUILD_LOCK_TIMEOUT",
    "CACHE_DIR_ENV",
    "MARKER",
    "UNUSED_ENTRY_DAYS",
    "CacheEntry",
    "cache_root",
    "copy_from",
    "discard",
    "ensure",
    "file_sizes",
    "prune",
]

CACHE_DIR_ENV = "PYTEST_SERVICES_CACHE_DIR"
MARKER = "complete.json"
#: Entries unused for this many days are removed when a new entry is built.
UNUSED_ENTRY_DAYS = 30
#: Seconds a session waits for another one that is building the same entry.
BUILD_LOCK_TIMEOUT = 600.0

#: Fills a build folder: writes ``data/`` (and any other file the entry keeps) into it, and
#: returns what the marker records beside the key and the file sizes.
Builder = Callable[[str], dict[str, Any]]


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

    def is_complete(self) -> bool:
        """True when the marker exists, names the key, and every file has its size."""
        try:
            with open(self.file(MARKER), encoding="utf-8") as marker:
                manifest = json.load(marker)
            return bool(
                manifest["key"] == self.key and manifest["files"] == file_sizes(self.data_dir)
            )
        except (OSError, ValueError, KeyError, TypeError):
            return False

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


def file_sizes(data_dir: str) -> dict[str, int]:
    """The size of every file below ``data_dir``, by relative path."""
    sizes = {}
    for folder, _dirs, files in os.walk(data_dir):
        for name in files:
            path = os.path.join(folder, name)
            sizes[os.path.relpath(path, data_dir)] = os.lstat(path).st_size
    return sizes


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


def ensure(entry: CacheEntry, build: Builder, log: Logger, doing: str) -> bool:
    """Make sure ``entry`` is complete, building it with ``build`` if it is not.

    ``doing`` says in the log what a build does.  Returns True when this call built it.
    """
    if entry.is_complete():
        entry.mark_used()
        return False
    with file_lock(f"{entry.path}.lock", remove=False, timeout=BUILD_LOCK_TIMEOUT):
        if entry.is_complete():
            return False
        for name in os.listdir(entry.cache):
            if name.startswith((f".build-{entry.key}-", f".trash-{entry.key}-")):
                shutil.rmtree(os.path.join(entry.cache, name), ignore_errors=True)
        if os.path.lexists(entry.path):
            log.warning("cache entry %s is incomplete or damaged: rebuilding it", entry.path)
            discard(entry.path)
        log.info("%s in %s", doing, entry.path)
        folder = tempfile.mkdtemp(prefix=f".build-{entry.key}-", dir=entry.cache)
        try:
            manifest = build(folder)
            data_dir = os.path.join(folder, "data")
            manifest.update(key=entry.key, files=file_sizes(sparsify_tree(data_dir)))
            with open(os.path.join(folder, MARKER), "w", encoding="utf-8") as marker:
                json.dump(manifest, marker)
            os.rename(folder, entry.path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    prune(entry.cache, entry.key, log)
    return True


def copy_from(source: Callable[[], str], data_dir: str) -> None:
    """Fill ``data_dir`` with a copy of the data directory that ``source()`` returns.

    Another session may find the entry damaged and replace it while it is copied: then the
    copy fails, and is made again from what ``source()`` returns next.
    """
    try:
        copy_tree(source(), data_dir)
    except OSError:
        shutil.rmtree(data_dir, ignore_errors=True)
        copy_tree(source(), data_dir)


def prune(cache: str, keep: str, log: Logger) -> None:
    """Remove the entries (of older server versions, say) unused for ``UNUSED_ENTRY_DAYS``."""
    limit = time.time() - UNUSED_ENTRY_DAYS * 86400
    for name in os.listdir(cache):
        path = os.path.join(cache, name)
        if name.startswith(".") or name == keep or not os.path.isdir(path):
            continue
        marker = os.path.join(path, MARKER)
        try:
            used = os.stat(marker if os.path.exists(marker) else path).st_mtime
        except OSError:
            continue
        if used < limit:
            log.info("removing the unused cache entry %s", path)
            discard(path)
            with contextlib.suppress(OSError):
                os.unlink(f"{path}.lock")
