"""Prepared database states in the cache: built once per server and key, copied per session.

Plain code, no pytest.  :func:`prepare_state_data_dir` fills a session's data directory
with a copy of the cache entry whose default database an :class:`~.state.DatabaseInit`
filled.  The entry is built at most once, however many sessions and workers ask at the same
time, from a copy of the server's base entry: a private server (watched like every service)
runs the loaders, the engine describes the result, the server shuts down cleanly, and the
entry protocol of :mod:`pytest_services._db.cache` renames the folder into place.  A failed
build leaves no entry behind.
"""

from __future__ import annotations

import os
from logging import Logger
from typing import Any

from pytest_services._db import cache
from pytest_services._db.cache import CacheEntry
from pytest_services._db.protocol import Engine
from pytest_services._db.sparse import copy_tree
from pytest_services._db.state import DatabaseInit, State, read_state, write_state
from pytest_services._engine.paths import StrPath

__all__ = ["prepare_state_data_dir", "prepared_entry"]


def prepared_entry(
    engine: Engine,
    init: DatabaseInit,
    database: str,
    run_dir: StrPath,
    log_dir: StrPath,
    log: Logger,
) -> tuple[str, State]:
    """The data directory and description of the prepared state; built on first use."""
    base = engine.base_entry()
    entry = CacheEntry.in_folder(base.cache, f"{base.key}-state-{init.state_key(database)}")

    def build(folder: str) -> dict[str, Any]:
        data_dir = os.path.join(folder, "data")
        copy_tree(engine.base_data_dir(), data_dir)
        process = engine.start_preparing(folder, data_dir, run_dir, log_dir)
        try:
            state = engine.fill(folder, init, database)
        finally:
            process.stop(grace=engine.start_timeout)  # a clean shutdown: a consistent copy
        if process.returncode != 0:
            raise init.error(
                f"The server that prepared the {engine.name} state did not shut down cleanly "
                f"(exit code {process.returncode}); see {process.log_path}."
            )
        engine.tidy(folder)
        write_state(folder, state)
        return {}

    if not cache.ensure(entry, build, log, f"preparing the {engine.name} state"):
        base.mark_used()  # a later rebuild starts from it: keep it from being pruned
    return entry.data_dir, read_state(entry.path)


def prepare_state_data_dir(
    engine: Engine,
    init: DatabaseInit,
    database: str,
    data_dir: str,
    run_dir: StrPath,
    log_dir: StrPath,
    log: Logger,
) -> State:
    """Fill ``data_dir`` with a copy of the prepared state; return its description."""
    found: list[State] = []

    def source() -> str:
        path, state = prepared_entry(engine, init, database, run_dir, log_dir, log)
        found.append(state)
        return path

    cache.copy_from(source, data_dir)
    return found[-1]
