"""Prepared database states in the cache: built once per server and key, copied per session.

Plain code, no pytest.  :func:`prepare_state_data_dir` fills a session's data directory
with a copy of the cache entry whose default database a :class:`~.state.DatabaseInit`
filled.  The entry is built at most once, however many sessions and workers ask at the same
time (:func:`pytest_services._db.build.ensure`), from a copy of the server's base entry: a
private server (watched like every service) runs the loaders in order, the engine describes
the result, the server shuts down cleanly, and the folder is renamed into place.  A failed
build leaves no entry behind, names the loader that failed (or that was running when the
server died, the time ran out or the disk filled up) and is not tried again in that run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from logging import Logger
from typing import Any, Optional

from pytest_services._db import build as _build
from pytest_services._db import spare
from pytest_services._db.cache import CacheEntry, copy_from, discard
from pytest_services._db.protocol import Engine
from pytest_services._db.sparse import copy_tree
from pytest_services._db.state import DatabaseInit, State, describe, read_state, write_state
from pytest_services._engine import ledger
from pytest_services._engine.paths import StrPath
from pytest_services.exceptions import DatabaseError

__all__ = [
    "DEATH_GRACE",
    "PREPARED",
    "Prepared",
    "cached_state_data_dir",
    "prepare_state_data_dir",
    "prepared_entry",
    "state_entry",
]

#: Seconds a failing build gives the preparing server to show that it died.
DEATH_GRACE = 1.0


@dataclass(frozen=True)
class Prepared:
    """A prepared state this process asked for: built here, or found in the cache."""

    engine: str
    key: str
    built: bool
    seconds: float


#: Every prepared state this process asked for, in order.
PREPARED: list[Prepared] = []


def _fill(
    engine: Engine,
    folder: str,
    init: DatabaseInit,
    database: str,
    run_dir: StrPath,
    log_dir: StrPath,
) -> dict[str, Any]:
    data_dir = os.path.join(folder, "data")
    copy_tree(engine.base_data_dir(), data_dir)
    process = engine.start_preparing(folder, data_dir, run_dir, log_dir)
    running: Optional[str] = None
    last: Optional[str] = None
    try:
        engine.create_database(database)
        for loader in init.load:
            running = describe(loader)
            engine.run_loader(init, loader, database)
            last, running = running, None
        state = engine.describe(database)
    except Exception as exc:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(DEATH_GRACE)  # a server shutting down may still be on its way out
        if process.poll() is None:
            raise
        during = f" while the loader {running} ran" if running else ""
        during = during or (f" after the loader {last} ran" if last else "")
        raise init.error(
            f"The server preparing the {engine.name} state died{during} (exit code "
            f"{process.returncode}); its log: {process.log_path}"
        ) from exc
    finally:
        process.stop(grace=engine.start_timeout)  # a clean shutdown: a consistent copy
    if process.returncode != 0:
        raise init.error(
            f"The server that prepared the {engine.name} state did not shut down cleanly "
            f"(exit code {process.returncode}); see {process.log_path}."
        )
    engine.tidy(folder)
    write_state(folder, state)
    return {"lineage": init.lineage(database)}


def state_entry(engine: Engine, init: DatabaseInit, database: str) -> CacheEntry:
    """The cache entry of the state ``init`` makes in ``database``, built or not."""
    base = engine.base_entry()
    return CacheEntry.in_folder(base.cache, f"{base.key}-state-{init.state_key(database)}")


def _bill(engine: Engine, key: str, built: bool, seconds: float) -> None:
    if ledger.deferred(_bill, engine, key, built, seconds):
        return
    ledger.built(getattr(engine, "service", engine.name), "state", built, seconds)
    PREPARED.append(Prepared(engine.name, key, built, seconds))


def prepared_entry(
    engine: Engine,
    init: DatabaseInit,
    database: str,
    run_dir: StrPath,
    log_dir: StrPath,
    log: Logger,
    run_id: Optional[str] = None,
    entry: Optional[CacheEntry] = None,
) -> tuple[str, State]:
    """The data directory and description of the prepared state; built on first use.

    A build that fails is not tried again by later callers with the same ``run_id``;
    ``entry`` is the state's :func:`state_entry` when the caller has it already."""
    base = engine.base_entry()
    entry = entry or state_entry(engine, init, database)
    started = time.monotonic()
    for attempt in (1, 2):
        built = _build.ensure(
            entry,
            lambda folder: _fill(engine, folder, init, database, run_dir, log_dir),
            log,
            f"preparing the {engine.name} state",
            timeout=init.timeout,
            run_id=run_id,
            error=init.error,
        )
        if not built:
            base.mark_used()  # a later rebuild starts from it: keep it from being pruned
        try:
            state = read_state(entry.path)
        except (OSError, ValueError) as exc:  # damaged after the check: build it anew
            if attempt == 2:
                raise DatabaseError(f"The cache entry {entry.path} cannot be read: {exc}") from exc
            log.warning("the cache entry %s cannot be read (%s): rebuilding it", entry.path, exc)
            discard(entry.path)
            continue
        _bill(engine, entry.key, built, time.monotonic() - started)
        return entry.data_dir, state
    raise AssertionError("unreachable")  # pragma: no cover


def prepare_state_data_dir(
    engine: Engine,
    init: DatabaseInit,
    database: str,
    data_dir: str,
    run_dir: StrPath,
    log_dir: StrPath,
    log: Logger,
    run_id: Optional[str] = None,
    spares: bool = False,
) -> State:
    """Fill ``data_dir`` with a copy of the prepared state; return its description.

    With ``spares``, a spare copy of the entry (:mod:`~pytest_services._db.spare`) is taken
    when there is one, and another is made for the next session once the server started."""
    found: list[State] = []
    entry = state_entry(engine, init, database)  # its key hashes the loaders: once

    def source() -> str:
        path, state = prepared_entry(
            engine, init, database, run_dir, log_dir, log, run_id, entry=entry
        )
        found.append(state)
        return path

    if not spares:
        copy_from(source, data_dir, engine.owner)
        return found[-1]
    state = _from_spare(engine, entry, data_dir)
    if state is None:
        copy_from(source, data_dir, engine.owner)
        state = found[-1]
    spare.make_after_start(entry, os.path.dirname(data_dir), engine.owner)
    return state


def cached_state_data_dir(
    engine: Engine, init: DatabaseInit, database: str, data_dir: str
) -> Optional[State]:
    """:func:`prepare_state_data_dir` with spares, when the cache holds the state already;
    None, with ``data_dir`` left empty, when it does not: nothing is built here."""
    entry = state_entry(engine, init, database)
    state = _from_spare(engine, entry, data_dir)
    if state is None:
        build = entry.ensure_build_id()
        if build is None or not entry.is_complete():
            return None
        started = time.monotonic()
        try:
            copy_tree(entry.data_dir, data_dir, engine.owner)
            state = read_state(entry.path)
        except (OSError, ValueError):  # being replaced: the usual way finds out
            state = None
        if state is None or entry.build_id() != build:
            shutil.rmtree(data_dir, ignore_errors=True)
            return None
        entry.mark_used()
        engine.base_entry().mark_used()
        _bill(engine, entry.key, False, time.monotonic() - started)
    spare.make_after_start(entry, os.path.dirname(data_dir), engine.owner)
    return state


def _from_spare(engine: Engine, entry: CacheEntry, data_dir: str) -> Optional[State]:
    """The description of the state, once a spare copy of it is in ``data_dir``; None when
    there is none (or the entry cannot be read: the usual way finds out what is wrong)."""
    started = time.monotonic()
    if not spare.take(entry, data_dir):
        return None
    try:
        state = read_state(entry.path)
    except (OSError, ValueError):
        shutil.rmtree(data_dir, ignore_errors=True)
        return None
    entry.mark_used()
    engine.base_entry().mark_used()
    _bill(engine, entry.key, False, time.monotonic() - started)
    return state
