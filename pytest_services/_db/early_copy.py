"""A data directory copied from the cache ahead of time, while the session does other work.

Plain code, no pytest.  A session whose tests will start a database server can tell, once
its tests are collected, which cache entry its server will most likely start from (the
Django glue computes the key as its report header does).  :func:`start` copies that entry's
data directory in a background thread into a scratch folder; the server fixture's copy
(:func:`pytest_services._db.cache.copy_from`) then :func:`take` s it with a rename instead
of copying, but only when it came from the very entry the fixture asks for, unchanged
since: a wrong guess costs a copy in the background, never a wrong data directory.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from typing import Optional

from pytest_services._db.cache import CacheEntry
from pytest_services._db.sparse import copy_tree

__all__ = ["EarlyCopy", "discard", "start", "take"]


class EarlyCopy:
    """A copy of ``find()``'s data directory into ``scratch/data``, made in a thread;
    ``hand_over(path)`` runs on the copy (giving it to the server's account...)."""

    def __init__(
        self,
        find: Callable[[], Optional[CacheEntry]],
        scratch: str,
        hand_over: Callable[[str], None],
        done: Callable[[str], None],
    ) -> None:
        self.scratch = scratch
        self.copy = os.path.join(scratch, "data")
        self._find = find
        self._hand_over = hand_over
        self._done = done
        self._entry: Optional[CacheEntry] = None
        self._build: Optional[str] = None
        self._thread = threading.Thread(target=self._run, name="early data copy", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            entry = self._find()
            if entry is None:
                return
            before = entry.ensure_build_id()
            if before is None or entry.spares(before) or not entry.is_complete():
                return  # gone, or a spare copy is there to be taken, or to be rebuilt
            copy_tree(entry.data_dir, self.copy)
            self._hand_over(self.copy)
            if entry.build_id() == before:
                self._entry, self._build = entry, before
        except Exception:  # a guess that did not work out: the fixture copies as usual
            self._entry = None

    def take(self, source: str, data_dir: str) -> bool:
        """Move the copy to ``data_dir`` when it was made from the data directory ``source``
        of an entry that is still the one copied; tell whether it did."""
        self._thread.join()
        entry = self._entry
        try:
            if entry is None or entry.data_dir != source or entry.build_id() != self._build:
                return False
            if os.path.isdir(data_dir) and not os.listdir(data_dir):
                os.rmdir(data_dir)
            try:
                os.rename(self.copy, data_dir)
            except OSError:  # another file system, or a folder there already
                return False
            return True
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove what is left of the copy."""
        self._thread.join()
        shutil.rmtree(self.scratch, ignore_errors=True)
        self._done(self.scratch)


_pending: list[EarlyCopy] = []


def start(
    find: Callable[[], Optional[CacheEntry]],
    scratch: str,
    hand_over: Callable[[str], None],
    done: Callable[[str], None],
) -> None:
    """Begin copying the data directory of the entry ``find()`` names into ``scratch``
    (a folder of this session's, which ``done(scratch)`` gives up at the end)."""
    _pending.append(EarlyCopy(find, scratch, hand_over, done))


def take(source: str, data_dir: str) -> bool:
    """Fill ``data_dir`` with the early copy of ``source`` if there is one; tell whether."""
    while _pending:
        if _pending.pop().take(source, data_dir):
            return True
    return False


def discard() -> None:
    """Remove every early copy nobody took (at the end of the session)."""
    while _pending:
        _pending.pop().discard()
