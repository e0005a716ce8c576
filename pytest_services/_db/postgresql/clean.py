"""Put the default database back in its prepared state, doing only what the last test needs.

Plain code, no pytest.  Every change to a PostgreSQL database goes through its write-ahead
log first, and the log's position tells in one query whether anything was written since the
last reset.  When it moved, the records since then (:mod:`~pytest_services._db.postgresql.wal`)
name the files that were written: those of the default database's tables and sequences, or
those of its catalogs (DDL, ``TRUNCATE``), or the shared catalogs (databases created or
dropped).  A reset then:

1. ends the transactions other connections left open (``pg_terminate_backend``: they roll
   back); idle connections keep working;
2. after DDL on tables and their parts only, undoes it table by table
   (:mod:`~pytest_services._db.postgresql.undo`); after any other DDL, or when that undo
   cannot reproduce a table, recreates the default database from the template database
   (``CREATE DATABASE ... TEMPLATE``), which ends every connection to it;
3. restores the rows of the tables written to from the template database (kept in memory
   once read), and sets back the sequences that moved;
4. drops the databases created since the first reset.

Nothing of this is in the default database: no trigger, function, schema or extension.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from pytest_services._db.postgresql import catalog, undo
from pytest_services._db.postgresql.activity import (
    busy_and_position,
    connections_to,
    end_connections,
)
from pytest_services._db.postgresql.describe import (
    CONTROL_DATABASE,
    RELATIONS,
    RELATIONS_OF,
    quote,
    sequences,
    setval,
)
from pytest_services._db.postgresql.wal import CATALOG_FILES, Changes, read_changes
from pytest_services._db.state import State

__all__ = ["PostgreSQLCleaner"]

#: Rows of the template kept in memory, at most (bytes); larger tables are read each time.
MAX_CACHED_ROWS = 256 * 1024 * 1024
#: A table is vacuumed once the resets deleted this many rows of it: dead rows would pile up.
VACUUM_AFTER = 10000
#: The catalogs are vacuumed after this many resets undid DDL table by table.
VACUUM_CATALOGS_AFTER = 200
#: Milliseconds a reset waits for a lock, or for the connections it ends, before giving up.
LOCK_WAIT_MS = 5000
#: Where the log ends, and the oldest transaction running: what the next reset looks after.
_POSITION = (
    "SELECT pg_current_wal_insert_lsn()::text, pg_snapshot_xmin(pg_current_snapshot())::text"
)


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
        self._inspect: Any = None
        self._template_db: Any = None
        self._since: Optional[str] = None
        self._horizon = "0"
        self._catalogs: dict[int, str] = {}
        self._undoer: Optional[undo.Undo] = None
        self._undos = 0
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

    def _inspector(self) -> Any:
        """A connection to the default database that only reads its catalogs: its prepared
        queries are not planned again after the DDL of the undo."""
        if self._inspect is None:
            self._inspect = self._open(self.database)
            # Its queries are planned once (they are prepared), not at each execution.
            self._inspect.execute("SET plan_cache_mode = force_generic_plan")
        return self._inspect

    def _load_relations(self, tables: Optional[set[str]] = None) -> None:
        """Map the files of the tables and sequences to them; only those of ``tables``,
        after they were made again."""
        if tables is not None:
            rows = self._inspector().execute(RELATIONS_OF, (sorted(tables),), prepare=True)
            self._relations = {
                node: relation
                for node, relation in self._relations.items()
                if relation[1] not in tables
            }
            self._relations.update((int(node), (kind, name)) for node, name, kind, _ in rows)
            return
        rows = self._db.execute(RELATIONS).fetchall()
        self._relations = {int(node): (kind, name) for node, name, kind, _ in rows if node}
        self._unlogged = {name for _, name, kind, persistence in rows if persistence == "u"}
        self._catalogs = dict(self._db.execute(CATALOG_FILES).fetchall())
        self._db_oid = int(
            self._db.execute(
                "SELECT oid FROM pg_database WHERE datname = current_database()"
            ).fetchone()[0]
        )

    def _template_connection(self) -> Any:
        if self._template_db is None:
            self._template_db = self._open(self.template)
        return self._template_db

    def close(self) -> None:
        """Close the cleaner's connections."""
        for name in ("_db", "_inspect", "_template_db", "_control"):
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
        busy, position = busy_and_position(control, self.database)
        if busy:  # they roll back
            end_connections(control, busy, LOCK_WAIT_MS)
        self._db_connection()
        if self._databases is None:
            self._databases = {
                name for (name,) in control.execute("SELECT datname FROM pg_database")
            }
        if position == self._since and not busy and not everything:
            if self._unlogged:
                self._restore_rows(self._unlogged)
            return
        changes = (
            Changes().everything()
            if everything
            else read_changes(control, self._since, self._db_oid, self._relations, self._catalogs)
        )
        self._put_back(control, changes)
        self._since, self._horizon = control.execute(_POSITION).fetchone()

    def _put_back(self, control: Any, changes: Changes) -> None:
        """Undo ``changes``: drop new databases, undo DDL, restore rows and sequences."""
        if changes.databases:
            self._drop_new_databases(control)
        rebuilt: set[str] = set()
        if changes.structure:
            undone = self._undo(changes)
            if undone is None:
                self._recreate(control)
                return
            rebuilt, truncated = undone
            changes.tables |= truncated
            changes.sequences = changes.sequences or bool(truncated)
        tables = (changes.tables | self._unlogged) - rebuilt
        if tables:
            self._restore_rows(tables)
        if changes.sequences:
            self._restore_sequences(self._db)

    def _undo(self, changes: Changes) -> Optional[tuple[set[str], set[str]]]:
        """Undo DDL table by table (:mod:`~pytest_services._db.postgresql.undo`): the
        tables rebuilt, and those whose rows alone are to be put back; None when only a copy
        of the template can undo it."""
        if changes.unknown or not changes.catalogs <= undo.CATALOGS_UNDONE:
            return None
        if self._undoer is None:
            template = self._template_connection()
            relations, loose = catalog.fingerprint(template, "0")
            self._undoer = undo.Undo(relations, loose, catalog.describe(template))
        db, inspect = self._db, self._inspector()
        plan = self._undoer.plan(
            *catalog.fingerprint(inspect, self._horizon),
            lambda names: catalog.describe(inspect, names),
        )
        if plan is None:
            return None
        restore = set(plan.restore)
        if not (plan.drop or plan.rebuild):
            return set(), restore
        try:
            with db.transaction():
                self._rebuild(plan)
        except Exception as exc:  # a dependency we did not see; nothing was changed
            if type(exc).__module__.split(".")[0] != "psycopg":
                raise
            return None
        rebuilt = set(plan.rebuild)
        # A table rebuilt as in the template once is rebuilt by the same statements again.
        check = [name for name in plan.check if name not in self._undoer.verified]
        if check and not self._undoer.matches(check, catalog.describe(inspect, check)):
            self._undoer.rebuildable -= rebuilt  # the copy of the template, from now on
            return None
        self._undoer.verified.update(check)
        if rebuilt:
            self._load_relations(rebuilt)
        self._undos += 1
        if self._undos % VACUUM_CATALOGS_AFTER == 0:  # their dead rows would pile up
            db.execute(f"VACUUM {', '.join(sorted(undo.CATALOGS_UNDONE))}")
        return rebuilt, restore

    def _rebuild(self, plan: undo.Plan) -> None:
        """Drop what ``plan`` drops, and make its tables again, with their rows and
        sequences: in two round trips, and one more per table for its rows."""
        db, undoer = self._db, self._undoer
        assert undoer is not None
        user = db.info.parameter_status("session_authorization") or ""
        before, after = undoer.scripts(plan, user, self.state["sequences"])
        db.execute(before)
        for name in plan.rebuild:
            with db.cursor().copy(f"COPY {name} FROM STDIN (FORMAT binary)") as copy:
                copy.write(self._template_rows(name))
            self._deleted.pop(name, None)
        if after:
            db.execute(after)

    def _drop_new_databases(self, control: Any) -> None:
        assert self._databases is not None
        for (name,) in control.execute("SELECT datname FROM pg_database").fetchall():
            if name not in self._databases | {self.database}:
                control.execute(f"DROP DATABASE {quote(name)} WITH (FORCE)")

    def _recreate(self, control: Any) -> None:
        """Replace the default database by a copy of the template (after DDL)."""
        for name in ("_db", "_inspect", "_template_db"):
            connection = getattr(self, name)
            if connection is not None:
                connection.close()
                setattr(self, name, None)
        db, template = quote(self.database), quote(self.template)
        connected = connections_to(control, [self.database, self.template])
        if connected:  # or the server waits for them in steps of 100 ms
            end_connections(control, connected, LOCK_WAIT_MS)
        control.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        control.execute(f"CREATE DATABASE {db} TEMPLATE {template} STRATEGY FILE_COPY")
        self._deleted.clear()
        self._db_connection()

    def _template_rows(self, table: str) -> bytes:
        rows = self._rows.get(table)
        if rows is not None:
            return rows
        data = bytearray()
        template = self._template_connection()
        with template.cursor().copy(f"COPY {table} TO STDOUT (FORMAT binary)") as copy:
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
                calls.append(setval(name, *wanted[name]))
        if calls:
            db.execute(f"SELECT {', '.join(calls)}")
