"""Prepared MySQL states in the data-directory cache: built once per server and key.

Plain code, no pytest.  :func:`prepare_state_data_dir` copies a cache entry whose default
database was filled by a :class:`~pytest_services._db.mysql.init.MySQLInit` into a session's
data directory.  The entry is built, at most once however many sessions and workers ask at
the same time, from a copy of the server's base entry: a private server (watched like every
service) runs the loaders, the result is described (:func:`snapshot`) and copied into the
template database from which ``mysql_clean`` restores rows, the server shuts down cleanly,
and the folder is renamed into place.  A failed build leaves no entry behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from logging import Logger
from typing import Any

from pytest_services._db.mysql.cache import (
    BUILD_LOCK_TIMEOUT,
    MARKER,
    _CacheEntry,
    _discard,
    _entry_is_complete,
    _file_sizes,
    _mark_used,
    _prune,
    base_entry,
    cached_data_dir,
)
from pytest_services._db.mysql.init import MySQLInit, MySQLInitError, run_loader, state_key
from pytest_services._db.mysql.server import START_TIMEOUT, MySQLServer, defaults_file_text
from pytest_services._db.sparse import copy_tree, sparsify_tree
from pytest_services.folders import StrPath, socket_path
from pytest_services.locks import file_lock
from pytest_services.process import start_service

#: The database that holds a copy of every table of the prepared state.
TEMPLATE = "pytest_services_template"
STATE_FILE = "state.json"
_AUTO_INCREMENT = re.compile(r" AUTO_INCREMENT=\d+")

State = dict[str, Any]


def quote(name: str) -> str:
    """``name`` as a MySQL identifier."""
    return "`" + name.replace("`", "``") + "`"


def empty_state(database: str) -> State:
    """The state of an empty default database (no ``mysql_init``)."""
    return {"database": database, "tables": {}, "views": {}, "triggers": {}, "routines": {}}


def normalise(create_table: str) -> str:
    """``SHOW CREATE TABLE`` without the auto-increment counter, which rows change."""
    return _AUTO_INCREMENT.sub("", create_table)


def _rows(cursor: Any, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    cursor.execute(sql, args)
    return list(cursor.fetchall())


def snapshot(cursor: Any, database: str) -> State:
    """Describe ``database``: its tables (definition, columns, counter), views, triggers,
    routines, and which tables refer to which by foreign key."""
    state = empty_state(database)
    db = quote(database)
    for name, kind, counter in _rows(
        cursor,
        "SELECT TABLE_NAME, TABLE_TYPE, AUTO_INCREMENT FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME",
        (database,),
    ):
        if kind == "VIEW":
            state["views"][name] = _rows(cursor, f"SHOW CREATE VIEW {db}.{quote(name)}")[0][1]
            continue
        columns = _rows(
            cursor,
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s "
            "AND TABLE_NAME = %s AND IS_GENERATED = 'NEVER' ORDER BY ORDINAL_POSITION",
            (database, name),
        )
        create = _rows(cursor, f"SHOW CREATE TABLE {db}.{quote(name)}")[0][1]
        state["tables"][name] = {
            "create": normalise(create),
            "columns": [column for (column,) in columns],
            "auto_increment": counter,
        }
    for name, table in _rows(
        cursor,
        "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS "
        "WHERE TRIGGER_SCHEMA = %s ORDER BY ACTION_ORDER",
        (database,),
    ):
        create = _rows(cursor, f"SHOW CREATE TRIGGER {db}.{quote(name)}")[0][2]
        state["triggers"][name] = {"table": table, "create": create}
    for name, kind in _rows(
        cursor,
        "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES "
        "WHERE ROUTINE_SCHEMA = %s",
        (database,),
    ):
        create = _rows(cursor, f"SHOW CREATE {kind} {db}.{quote(name)}")[0][2]
        state["routines"][name] = {"type": kind, "create": create}
    children: dict[str, list[str]] = {}
    for parent, child in _rows(
        cursor,
        "SELECT DISTINCT REFERENCED_TABLE_NAME, TABLE_NAME FROM "
        "information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = %s "
        "AND REFERENCED_TABLE_SCHEMA = %s",
        (database, database),
    ):
        children.setdefault(parent, []).append(child)
    state["children"] = children
    return state


def fill_template(cursor: Any, state: State) -> None:
    """Copy every table of the default database, rows included, into :data:`TEMPLATE`."""
    db = quote(state["database"])
    cursor.execute("SET SESSION foreign_key_checks = 0")
    cursor.execute(f"DROP DATABASE IF EXISTS {quote(TEMPLATE)}")
    cursor.execute(f"CREATE DATABASE {quote(TEMPLATE)}")
    for name, table in state["tables"].items():
        target = f"{quote(TEMPLATE)}.{quote(name)}"
        columns = ", ".join(quote(column) for column in table["columns"])
        cursor.execute(f"CREATE TABLE {target} LIKE {db}.{quote(name)}")
        cursor.execute(f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {db}.{quote(name)}")


def _connect(socket: str, database: str = "") -> Any:
    import MySQLdb

    return MySQLdb.connect(unix_socket=socket, user="root", db=database, autocommit=True)


def _build(
    server: MySQLServer,
    base: str,
    entry: _CacheEntry,
    init: MySQLInit,
    database: str,
    run_dir: StrPath,
    log_dir: StrPath,
) -> State:
    build = tempfile.mkdtemp(prefix=f".build-{entry.key}-", dir=os.path.dirname(entry.path))
    try:
        data_dir = os.path.join(build, "data")
        copy_tree(base, data_dir)
        socket = socket_path(run_dir, "mysql-prepare.sock")
        defaults = os.path.join(build, "my.cnf")
        tmp_dir = os.path.join(build, "tmp")
        os.mkdir(tmp_dir)
        with open(defaults, "w", encoding="utf-8") as cnf:
            pid_file = os.path.join(build, "mysql.pid")
            cnf.write(defaults_file_text(server, data_dir, socket, pid_file, tmp_dir, binlog=False))
        arguments = [f"--defaults-file={defaults}"]
        if os.geteuid() == 0:
            arguments.append("--user=root")

        def accepts() -> bool:
            import MySQLdb

            try:
                _connect(socket).close()
            except MySQLdb.Error:
                return False
            return True

        process = start_service(
            server.binary, arguments, timeout=START_TIMEOUT, checker=accepts, log_dir=log_dir
        )
        try:
            connection = _connect(socket)
            connection.cursor().execute(f"CREATE DATABASE {quote(database)}")
            for loader in init.load:
                run_loader(server, loader, socket, database)
            connection.select_db(database)
            state = snapshot(connection.cursor(), database)
            fill_template(connection.cursor(), state)
            connection.close()
        finally:
            process.stop(grace=START_TIMEOUT)  # a clean shutdown: the copy must be consistent
        if process.returncode != 0:
            raise MySQLInitError(
                f"The server that prepared the MySQL state did not shut down cleanly "
                f"(exit code {process.returncode}); see {process.log_path}."
            )
        shutil.rmtree(tmp_dir)
        for name in ("my.cnf", "mysql.pid"):
            if os.path.exists(os.path.join(build, name)):
                os.unlink(os.path.join(build, name))
        with open(os.path.join(build, STATE_FILE), "w", encoding="utf-8") as state_file:
            json.dump(state, state_file)
        manifest = {"key": entry.key, "files": _file_sizes(sparsify_tree(data_dir))}
        with open(os.path.join(build, MARKER), "w", encoding="utf-8") as marker:
            json.dump(manifest, marker)
        os.rename(build, entry.path)
        return state
    finally:
        shutil.rmtree(build, ignore_errors=True)


def prepared_entry(
    server: MySQLServer,
    mysql_cache: str,
    init: MySQLInit,
    database: str,
    run_dir: StrPath,
    log_dir: StrPath,
    log: Logger,
) -> tuple[str, State]:
    """The data directory and description of the prepared state; built on first use."""
    base = base_entry(server, mysql_cache)
    key = f"{base.key}-state-{state_key(init, database)}"
    entry = _CacheEntry(key, os.path.join(mysql_cache, key))
    if not _entry_is_complete(entry):
        base_data = cached_data_dir(server, mysql_cache, log)  # only a build needs it
        with file_lock(f"{entry.path}.lock", remove=False, timeout=BUILD_LOCK_TIMEOUT):
            if not _entry_is_complete(entry):
                for name in os.listdir(mysql_cache):
                    if name.startswith((f".build-{key}-", f".trash-{key}-")):
                        shutil.rmtree(os.path.join(mysql_cache, name), ignore_errors=True)
                _discard(entry.path)
                log.info("preparing the MySQL state %s", entry.path)
                _build(server, base_data, entry, init, database, run_dir, log_dir)
        _prune(mysql_cache, key, log)
    else:
        _mark_used(entry)
        _mark_used(base)  # a later rebuild starts from it: keep it from being pruned
    with open(os.path.join(entry.path, STATE_FILE), encoding="utf-8") as state_file:
        state: State = json.load(state_file)
    return entry.data_dir, state


def prepare_state_data_dir(
    server: MySQLServer,
    mysql_cache: str,
    init: MySQLInit,
    database: str,
    data_dir: str,
    run_dir: StrPath,
    log_dir: StrPath,
    log: Logger,
) -> State:
    """Fill ``data_dir`` with a copy of the prepared state; return its description."""
    for attempt in (1, 2):
        source, state = prepared_entry(server, mysql_cache, init, database, run_dir, log_dir, log)
        try:
            copy_tree(source, data_dir)
            return state
        except OSError:
            # Another session found the entry damaged and is replacing it: take the new one.
            shutil.rmtree(data_dir, ignore_errors=True)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")  # pragma: no cover
