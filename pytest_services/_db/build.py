"""Building a cache entry once: under a lock, bounded in time and disk, failing once per run.

Plain code, no pytest.  :func:`ensure` makes an entry of :mod:`pytest_services._db.cache`
complete.  Concurrent sessions build it once: the first takes the entry's kernel lock and
notes its pid beside it, the others wait and say whom they wait for.  A build runs in a
thread of its own while the caller watches it: past its time limit, or when the cache's
filesystem fills up, everything the build started is stopped and the error says which.  A
failed build is remembered for the run (every pytest-xdist worker of a run gets the same
error at once instead of failing it again); a later run tries again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from logging import Logger
from typing import Any, Optional

from pytest_services._db.cache import CacheEntry, discard, prune, sweep_abandoned, write_marker
from pytest_services._engine import ledger
from pytest_services._engine.commands import collect_groups
from pytest_services._engine.groups import signal_group
from pytest_services._reserve.lockfiles import try_lock
from pytest_services.exceptions import DatabaseError, LockError

__all__ = ["BUILD_TIMEOUT", "MIN_FREE_BYTES", "WAIT_MARGIN", "Builder", "ensure", "free_bytes"]

#: Seconds a build may take unless the caller says otherwise.
BUILD_TIMEOUT = 600.0
#: Below this much free space in the cache's filesystem a build does not start, and one
#: that is running is stopped: servers wait for free space instead of failing.
MIN_FREE_BYTES = 32 * 1024 * 1024
#: Seconds a session waits for another's build beyond that build's own time limit.
WAIT_MARGIN = 60.0
#: Seconds between two looks at a running build.
_WATCH_EVERY = 0.05

#: Fills a build folder: writes ``data/`` (and any other file the entry keeps) into it, and
#: returns what the marker records beside the key and the files.
Builder = Callable[[str], dict[str, Any]]


def free_bytes(folder: str) -> int:
    """Free space, in bytes, of the filesystem that holds ``folder``."""
    return shutil.disk_usage(folder).free


def _disk_full_error(cache: str, doing: str = "") -> DatabaseError:
    """The error of a full cache filesystem; ``doing`` names the build it stopped."""
    stopped = f", and {doing} was stopped" if doing else ""
    return DatabaseError(
        f"The filesystem of the cache folder {cache} is full ({free_bytes(cache) // 1024} KiB "
        f"free{stopped}, "
        f"{MIN_FREE_BYTES // 1024 // 1024} MiB needed at least): free some space, or "
        "set PYTEST_SERVICES_CACHE_DIR to a folder on a roomier filesystem."
    )


def _run_guarded(build: Builder, folder: str, cache: str, timeout: float, doing: str) -> Any:
    """Run ``build(folder)`` in a thread; stop what it started past ``timeout`` or when the
    disk fills up, and raise what happened."""
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["manifest"] = build(folder)
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    with collect_groups() as groups:
        worker = threading.Thread(target=work, name=f"pytest-services {doing}", daemon=True)
        worker.start()
        deadline = time.monotonic() + timeout
        problem: Optional[Exception] = None
        try:
            while worker.is_alive():
                worker.join(_WATCH_EVERY)
                if not worker.is_alive():
                    break
                if free_bytes(cache) < MIN_FREE_BYTES // 4:
                    problem = _disk_full_error(cache, doing)
                elif time.monotonic() > deadline:
                    problem = DatabaseError(
                        f"{doing[:1].upper()}{doing[1:]} took longer than {timeout:g} s and was "
                        "stopped; give it more time (timeout=...) if it needs it."
                    )
                if problem is not None:
                    break
        except BaseException:  # Ctrl-C: stop the build now, not when it ends
            _stop(groups)
            raise
        if problem is not None:
            _stop(groups)
            worker.join(5)
            if "error" in outcome:
                raise problem from outcome["error"]
            raise problem
    if "error" in outcome:
        raise outcome["error"]
    return outcome["manifest"]


def _stop(groups: set[int]) -> None:
    for pgid in groups:
        signal_group(pgid, signal.SIGKILL)


def _failure_file(entry: CacheEntry) -> str:
    return f"{entry.path}.failed"


def _remembered_failure(entry: CacheEntry, run_id: Optional[str]) -> Optional[str]:
    if run_id is None:
        return None
    try:
        with open(_failure_file(entry), encoding="utf-8") as failure:
            found = json.load(failure)
    except (OSError, ValueError):
        return None
    if isinstance(found, dict) and found.get("run") == run_id:
        return str(found.get("error", ""))
    return None


def _remember_failure(entry: CacheEntry, run_id: Optional[str], error: BaseException) -> None:
    if run_id is None:
        return
    with contextlib.suppress(OSError), open(_failure_file(entry), "w", encoding="utf-8") as f:
        json.dump({"run": run_id, "error": str(error)}, f)


def _builder_file(entry: CacheEntry) -> str:
    return f"{entry.path}.builder"


def _who_builds(entry: CacheEntry) -> str:
    try:
        with open(_builder_file(entry), encoding="utf-8") as builder:
            found = json.load(builder)
        since = time.strftime("%H:%M:%S", time.localtime(found["started"]))
        return f"the pytest process {found['pid']} (since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another pytest process"


def _take_build_lock(entry: CacheEntry, wait: float, doing: str, log: Logger) -> int:
    """Take the entry's lock, waiting up to ``wait`` seconds for the session that holds it."""
    path = f"{entry.path}.lock"
    fd = try_lock(path)
    if fd is not None:
        return fd
    log.info("waiting for %s, which is %s", _who_builds(entry), doing)
    deadline = time.monotonic() + wait
    delay = 0.005
    while time.monotonic() < deadline:
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
        fd = try_lock(path)
        if fd is not None:
            return fd
    raise LockError(
        f"Waited {wait:g} s for {_who_builds(entry)}, which is {doing} ({entry.path}); it has "
        "not finished. Stop it, or wait for it to end."
    )


def ensure(
    entry: CacheEntry,
    build: Builder,
    log: Logger,
    doing: str,
    *,
    timeout: float = BUILD_TIMEOUT,
    run_id: Optional[str] = None,
    error: type[DatabaseError] = DatabaseError,
    service: str = "",
    kind: str = "cache",
) -> bool:
    """Make sure ``entry`` is complete, building it with ``build`` if it is not.

    ``doing`` says what a build does ("preparing the MySQL state"); a build may take
    ``timeout`` seconds.  A failure is remembered for the run ``run_id`` and raised again
    as ``error`` to every later caller of that run.  Returns True when this call built it.
    With ``service``, the session's bill counts the entry as reused or built, of ``kind``
    ``"cache"`` (a server's initialised data directory) or ``"state"`` (a prepared state).
    """
    begun = time.perf_counter()
    with ledger.building():
        was_built = _ensure(entry, build, log, doing, timeout, run_id, error)
    if service:
        ledger.built(service, kind, was_built, time.perf_counter() - begun)
    return was_built


def _ensure(
    entry: CacheEntry,
    build: Builder,
    log: Logger,
    doing: str,
    timeout: float,
    run_id: Optional[str],
    error: type[DatabaseError],
) -> bool:
    if entry.is_complete():
        entry.mark_used()
        return False
    fd = _take_build_lock(entry, timeout + WAIT_MARGIN, doing, log)
    try:
        if entry.is_complete():
            return False
        remembered = _remembered_failure(entry, run_id)
        if remembered is not None:
            raise error(f"{remembered}\n  (failed earlier in this run; not tried again)")
        if free_bytes(entry.cache) < MIN_FREE_BYTES:
            raise _disk_full_error(entry.cache)
        sweep_abandoned(entry.cache, entry.key)
        with open(_builder_file(entry), "w", encoding="utf-8") as builder:
            json.dump({"pid": os.getpid(), "started": time.time()}, builder)
        if os.path.lexists(entry.path):
            log.warning("cache entry %s is incomplete or damaged: rebuilding it", entry.path)
        log.info("%s in %s", doing, entry.path)
        folder = tempfile.mkdtemp(prefix=f".build-{entry.key}-", dir=entry.cache)
        try:
            manifest = _run_guarded(build, folder, entry.cache, timeout, doing)
            write_marker(folder, entry.key, manifest)
            discard(entry.path)
            os.rename(folder, entry.path)
        except BaseException as exc:
            if isinstance(exc, Exception):
                _remember_failure(entry, run_id, exc)
            raise
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                os.unlink(_builder_file(entry))
        with contextlib.suppress(OSError):
            os.unlink(_failure_file(entry))
    finally:
        os.close(fd)
    prune(entry.cache, entry.key, log)
    return True
