"""Spare copies of a cache entry's data directory, ready to be taken with a rename.

Plain code, no pytest.  Copying a data directory (a thousand files or more) is most of a
database server's start.  So a session that started its server from an entry copies that
entry once more in the background while its tests run, and leaves the copy beside the entry
as ``<cache>/.spare-<key>@<build>@<id>``, up to ``PYTEST_SERVICES_SPARE_COPIES`` of them per
entry (default ``DEFAULT_COPIES``; 0 turns spares off).  The next session takes one with a
rename instead of checking the entry's files and copying them.

A spare is only made from an entry found complete, and is named after that very build of it
(:meth:`~pytest_services._db.cache.CacheEntry.build_id`): the spares of an entry that was
rebuilt since are never taken, and go with the next spare made or with the entry itself.  A
copy being made lives in the session's own folder until it is complete, so a session that
dies leaves no half-made spare behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable
from typing import Optional

from pytest_services._db.build import MIN_FREE_BYTES
from pytest_services._db.cache import SPARE_PREFIX, CacheEntry, discard
from pytest_services._db.sparse import Owner, copy_tree
from pytest_services._engine import ledger

__all__ = [
    "COPIES_ENV",
    "DEFAULT_COPIES",
    "copies",
    "finish",
    "make",
    "make_after_start",
    "take",
]

COPIES_ENV = "PYTEST_SERVICES_SPARE_COPIES"
#: Spares kept per entry: one for each worker of a ``-n 2`` run.
DEFAULT_COPIES = 2


def copies() -> int:
    """How many spares each entry keeps (``PYTEST_SERVICES_SPARE_COPIES``)."""
    try:
        return max(0, int(os.environ.get(COPIES_ENV, "") or DEFAULT_COPIES))
    except ValueError:
        return DEFAULT_COPIES


def take(entry: CacheEntry, data_dir: str) -> bool:
    """Move a spare of ``entry``'s current build to ``data_dir`` (absent, or an empty
    folder); tell whether there was one.  Concurrent sessions never take the same spare."""
    if copies() == 0:
        return False
    build = entry.build_id()
    if build is None:
        return False
    for spare in entry.spares(build):
        try:
            os.rename(spare, data_dir)  # replaces an empty folder; fails if taken meanwhile
        except OSError:
            continue
        return True
    return False


def _discard_other_builds(entry: CacheEntry, build: str) -> None:
    """Remove the spares of ``entry`` made from another build than ``build``."""
    kept = entry.spares(build)
    for spare in entry.spares():
        if spare not in kept:
            discard(spare)


def _make(entry: CacheEntry, scratch_parent: str, owner: Optional[Owner]) -> None:
    build = entry.ensure_build_id()
    if build is None:
        return
    _discard_other_builds(entry, build)
    if len(entry.spares(build)) >= copies():
        return
    if os.stat(scratch_parent).st_dev != os.stat(entry.cache).st_dev:
        return  # a spare could not be renamed into place: copying it would be wasted
    if not entry.is_complete():
        return  # the next session finds out and rebuilds it
    size = sum(int(found[0]) for found in entry.manifest().get("files", {}).values())
    if shutil.disk_usage(entry.cache).free < size + MIN_FREE_BYTES:
        return  # a spare must not take the room that servers and builds need
    scratch = tempfile.mkdtemp(prefix="spare-", dir=scratch_parent)
    try:
        copy = os.path.join(scratch, "data")
        copy_tree(entry.data_dir, copy, owner)
        if entry.build_id() != build or len(entry.spares(build)) >= copies():
            return  # rebuilt while copying, or another session made the last one
        name = f"{SPARE_PREFIX}{entry.key}@{build}@{uuid.uuid4().hex}"
        os.rename(copy, os.path.join(entry.cache, name))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


_makers: list[threading.Thread] = []
_waiting: list[Callable[[], None]] = []


def _run(entry: CacheEntry, scratch_parent: str, owner: Optional[Owner]) -> None:
    if sys.platform == "linux":  # this thread only: the tests and other workers go first
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    with contextlib.suppress(OSError):  # a spare is a convenience: none is made, that is all
        _make(entry, scratch_parent, owner)


def make(entry: CacheEntry, scratch_parent: str, owner: Optional[Owner] = None) -> None:
    """Begin making a spare of ``entry`` in a thread, if it has fewer than :func:`copies`;
    it is copied into a folder made in ``scratch_parent`` (this session's, on the cache's
    file system), and belongs to ``owner`` when given.  :func:`finish` waits for it."""
    if copies() == 0:
        return
    maker = threading.Thread(
        target=_run, args=(entry, scratch_parent, owner), name="spare data copy", daemon=True
    )
    _makers.append(maker)
    maker.start()


def make_after_start(entry: CacheEntry, scratch_parent: str, owner: Optional[Owner]) -> None:
    """:func:`make` a spare once the next service has started (the server that starts from
    the copy just taken), so that the copy does not slow that start down."""
    if ledger.deferred(make_after_start, entry, scratch_parent, owner):
        return  # a server started ahead of time: only if it is used

    def begin() -> None:
        make(entry, scratch_parent, owner)

    _waiting.append(begin)
    ledger.on_first_start(begin)


def finish() -> None:
    """Wait for the spares being made (before the session's folders go)."""
    while _waiting:
        ledger.cancel(_waiting.pop())
    while _makers:
        _makers.pop().join()
