"""Put the default database back in its prepared state, doing only what the last test needs.

Plain code, no pytest.  Every change to a PostgreSQL database goes through its write-ahead
log first, and the log's position tells in one query whether anything was written since the
last reset.  When it moved, the records since then (read with ``pg_walinspect``, from the
``postgres`` database) name the files that were written: those of the default database's
tables and sequences, or those of its catalogs (DDL, ``TRUNCATE``), or the shared catalogs
(databases created or dropped).  A reset then:

1. ends the transactions other connections left open (``pg_terminate_backend``: they roll
   back); idle connections keep working;
2. after DDL, recreates the default database from the template database (``CREATE
   DATABASE ... TEMPLATE``), which ends every connection to it;
3. otherwise restores the rows of the tables written to from the template database (kept
   in memory once read), and sets back the sequences that moved;
4. drops the databases created since the first reset.

Nothing of this is in the default database: no trigger, function, schema or extension.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Optional

from pytest_services._db.postgresql.describe import (
    CONTROL_DATABASE,
    RELATIONS,
    quote,
    sequences,
)
from pytest_services._db.state import State
from pytest_services.exceptions import PostgreSQLError

__all__ = ["PostgreSQLCleaner"]

#: Rows of the template kept in memory, at most (bytes); larger tables are read each time.
MAX_CACHED_ROWS = 256 * 1024 * 1024
#: A table is vacuumed once the resets deleted this many rows of it: dead rows would pile up.
VACUUM_AFTER = 10000
#: Milliseconds a reset waits for a lock, or for the connections it ends, before giving up.
LOCK_WAIT_MS = 5000
#: The other connections to the default database that are in a transaction (or running a
#: statement), and where the log ends.
_BUSY = """
SELECT array(SELECT pid FROM pg_stat_activity
             WHERE datname = %s AND pid <> pg_backend_pid()
               AND backend_type = 'client backend' AND state <> 'idle'),
       pg_current_wal_insert_lsn()::text
"""
#: The connections to the databases named.
_CONNECTED = """
SELECT array(SELECT pid FROM pg_stat_activity
             WHERE datname = ANY(%s) AND pid <> pg_backend_pid())
"""
_TERMINATE = "SELECT count(pg_terminate_backend(pid)) FROM unnest(%s::int[]) AS ended (pid)"
_GONE = "SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = ANY(%s::int[]))"
#: The log's records since a position: the files they wrote, and those that make or drop
#: databases and files (``description`` then says which).
_RECORDS = r"""
SELECT DISTINCT r.resource_manager, r.record_type, m[1]::oid, m[2]::oid,
       CASE WHEN m IS NULL THEN r.description END
FROM pg_get_wal_records_info_till_end_of_wal(%s::pg_lsn) r
LEFT JOIN LATERAL regexp_matches(r.block_ref, 'rel \d+/(\d+)/(\d+)', 'g') AS m ON true
WHERE r.resource_manager NOT IN ('Transaction', 'Standby', 'LogicalMessage')
  AND NOT (r.resource_manager = 'Heap2' AND r.record_type IN ('PRUNE', 'VACUUM', 'VISIBLE'))
"""
#: A commit of our own, synchronous: the log up to here is flushed, so that it can be read.
_FLUSH = "SELECT pg_logical_emit_message(true, 'pytest_services', '')"


class _Changes:
    """What the log says was written: tables, sequences, DDL, databases."""

    def __init__(self) -> None:
        self.tables: set[str] = set()
        self.sequences = False
        self.structure = False
        self.databases = False

    def everything(self) -> _Changes:
        self.structure = self.databases = self.sequences = True
        return self


class PostgreSQLCleaner:
    """Resets the default database of one server; ``reset()`` before each test.

    ``connect(database)`` returns a new autocommit connection (psycopg) to ``database``.
    """

    def __init__(self, connect: Callable[[str], Any], state: State) -> None:
        self._connect = connect
        self.state = state
        self.database: str = state["database"]
        self.template: str = state["template"]
        self._control: Any = None
        self._db: Any = None
        self._template_db: Any = None
        self._since: Optional[str] = None
        self._db_oid = 0
        self._relations: dict[int, tuple[str, str]] = {}
        self._unlogged: set[str] = set()
        self._databases: Optional[set[str]] = None
        self._rows: dict[str, bytes] = {}
        self._cached = 0
        self._deleted: dict[str, int] = {}

    # -- connections ---------------------------------------------------------------------

    def _open(self, database: str) -> Any:
        connection = self._connect(database)
        connection.execute("SET synchronous_commit = on")
        connection.execute(f"SET lock_timeout = {LOCK_WAIT_MS}")
        return connection

    def _control_connection(self) -> Any:
        if self._control is None:
            self._control = self._open(CONTROL_DATABASE)
        return self._control

    def _db_connection(self) -> Any:
        if self._db is None:
            self._db = self._open(self.database)
            self._load_relations()
        return self._db

    def _load_relations(self) -> None:
        rows = self._db.execute(RELATIONS).fetchall()
        self._relations = {int(node): (kind, name) for node, name, kind, _ in rows if node}
        self._unlogged = {name for _, name, kind, persistence in rows if persistence == "u"}
        self._db_oid = int(
            self._db.execute(
                "SELECT oid FROM pg_database WHERE datname = current_database()"
            ).fetchone()[0]
        )

    def close(self) -> None:
        """Close the cleaner's connections."""
        for name in ("_db", "_template_db", "_control"):
            connection = getattr(self, name)
            if connection is not None:
                connection.close()
                setattr(self, name, None)

    # -- the reset -----------------------------------------------------------------------

    def reset(self, test: str = "") -> None:
        """Make the default database what the state describes; cheap when nothing changed."""
        try:
            self._reset()
        except Exception as exc:
            if type(exc).__module__.split(".")[0] != "psycopg":
                raise
            # A connection of ours was ended, or a lock held: start over on new connections,
            # recreating the database.
            self.close()
            self._since = None
            self._reset(everything=True)

    def _reset(self, everything: bool = False) -> None:
        control = self._control_connection()
        busy, position = control.execute(_BUSY, (self.database,)).fetchone()
        if busy:  # they roll back
            self._end_connections(control, busy)
        db = self._db_connection()
        if self._databases is None:
            self._databases = {
                name for (name,) in control.execute("SELECT datname FROM pg_database")
            }
        if position == self._since and not busy and not everything:
            if self._unlogged:
                self._restore_rows(self._unlogged)
            return
        changes = _Changes().everything() if everything else self._changes(control)
        if changes.databases:
            self._drop_new_databases(control)
        if changes.structure:
            self._recreate(control)
        else:
            if changes.tables or self._unlogged:
                self._restore_rows(changes.tables | self._unlogged)
            if changes.sequences:
                self._restore_sequences(db)
        self._since = control.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]

    def _changes(self, control: Any) -> _Changes:
        """What the log since the last reset says was written."""
        changes = _Changes()
        if self._since is None:
            start = control.execute(
                "SELECT checkpoint_lsn::text, checkpoint_time > pg_postmaster_start_time() "
                "FROM pg_control_checkpoint()"
            ).fetchone()
            if start[1]:  # a checkpoint since the server started: its start is out of reach
                return changes.everything()
            since = start[0]
        else:
            since = self._since
        control.execute(_FLUSH)
        try:
            records = control.execute(_RECORDS, (since,)).fetchall()
        except Exception as exc:  # the log was recycled by a checkpoint: look at everything
            if type(exc).__module__.split(".")[0] != "psycopg":
                raise
            return changes.everything()
        for manager, kind, database, node, description in records:
            if manager == "Database":
                changes.databases = True
            elif manager == "Storage" or (manager == "Heap" and kind == "TRUNCATE"):
                if description is None or f"/{self._db_oid}/" in f"/{description}":
                    changes.structure = True
            elif database == 0:
                changes.databases = True
            elif database == self._db_oid:
                relation = self._relations.get(int(node))
                if relation is None or relation[0] == "m":
                    changes.structure = True
                elif relation[0] == "S":
                    changes.sequences = True
                else:
                    changes.tables.add(relation[1])
        return changes

    def _end_connections(self, control: Any, pids: list[int]) -> None:
        """End the connections of ``pids``, and wait until they are gone: the server's own
        wait (``pg_terminate_backend(pid, timeout)``) looks every 100 ms."""
        control.execute(_TERMINATE, (pids,))
        deadline = time.monotonic() + LOCK_WAIT_MS / 1000
        while not control.execute(_GONE, (pids,)).fetchone()[0]:
            if time.monotonic() > deadline:
                raise PostgreSQLError(
                    f"The connections {pids} to the test databases did not end within "
                    f"{LOCK_WAIT_MS} ms of pg_terminate_backend; see the server's log."
                )
            time.sleep(0.0005)

    def _drop_new_databases(self, control: Any) -> None:
        assert self._databases is not None
        for (name,) in control.execute("SELECT datname FROM pg_database").fetchall():
            if name not in self._databases | {self.database}:
                control.execute(f"DROP DATABASE {quote(name)} WITH (FORCE)")

    def _recreate(self, control: Any) -> None:
        """Replace the default database by a copy of the template (after DDL)."""
        for name in ("_db", "_template_db"):
            connection = getattr(self, name)
            if connection is not None:
                connection.close()
                setattr(self, name, None)
        db, template = quote(self.database), quote(self.template)
        (connected,) = control.execute(_CONNECTED, ([self.database, self.template],)).fetchone()
        if connected:  # or the server waits for them in steps of 100 ms
            self._end_connections(control, connected)
        control.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        control.execute(f"CREATE DATABASE {db} TEMPLATE {template} STRATEGY FILE_COPY")
        self._deleted.clear()
        self._db_connection()

    def _template_rows(self, table: str) -> bytes:
        rows = self._rows.get(table)
        if rows is not None:
            return rows
        if self._template_db is None:
            self._template_db = self._open(self.template)
        data = bytearray()
        with self._template_db.cursor().copy(f"COPY {table} TO STDOUT (FORMAT binary)") as copy:
            for block in copy:
                data += block
        if self._cached + len(data) <= MAX_CACHED_ROWS:
            self._rows[table] = bytes(data)
            self._cached += len(data)
        return bytes(data)

    def _restore_rows(self, tables: set[str]) -> None:
        """Delete the rows of ``tables`` and copy the template's back, with no trigger or
        foreign key check firing (the template's rows are consistent)."""
        db = self._db
        vacuum = []
        with db.transaction():
            db.execute("SET LOCAL session_replication_role = replica")
            for table in sorted(tables):
                deleted = db.execute(f"DELETE FROM {table}").rowcount
                rows = self._template_rows(table)
                with db.cursor().copy(f"COPY {table} FROM STDIN (FORMAT binary)") as copy:
                    copy.write(rows)
                self._deleted[table] = self._deleted.get(table, 0) + max(deleted, 0)
                if self._deleted[table] > VACUUM_AFTER:
                    vacuum.append(table)
        for table in vacuum:
            db.execute(f"VACUUM {table}")
            self._deleted[table] = 0

    def _restore_sequences(self, db: Any) -> None:
        wanted = self.state["sequences"]
        calls = []
        for name, (last, _start) in sequences(db).items():
            if name in wanted and wanted[name][0] != last:
                value, start = wanted[name]
                called = "true" if value is not None else "false"
                calls.append(f"setval({_literal(name)}, {int(value or start)}, {called})")
        if calls:
            db.execute(f"SELECT {', '.join(calls)}")


def _literal(text: str) -> str:
    return "'{}'".format(text.replace("'", "''"))
