"""Put the default database back in its prepared state, doing only what the last test needs.

Plain code, no pytest.  A session's server keeps a binary log of rows (never synced).  One
round trip tells whether anything is to be done: the log's position, the watched global
variables, whether other connections hold locks or transactions, and the auto-increment
counters.  When something is, a reset:

1. puts back the global variables (:data:`~pytest_services._db.mysql.guard.GLOBALS`);
2. ends the other connections that hold a transaction or a lock, or wait for one, waiters
   first, and rolls back prepared XA transactions that no connection owns;
3. reads the log (:mod:`pytest_services._db.mysql.binlog`): when DDL ran, drops extra
   databases, tables, views, triggers, routines, events and users, and recreates what is
   missing or changed from the recorded definitions; repairs the template database from
   the default database where a test wrote to it; restores the rows of every table named by
   the log, and of the tables that refer to them by foreign key;
4. does it again while the log moved under it, so it never finishes on a stale position.

The reset's own statements are kept out of the log (``sql_log_bin = 0``).  What it cannot
put back (grants of the server's own users, history of system-versioned tables, the
template's rows when both copies changed) fails the next test with the test that did it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from pytest_services._db.mysql import counters, guard
from pytest_services._db.mysql.binlog import Changes, Position, read_changes
from pytest_services._db.mysql.describe import TEMPLATE, quote
from pytest_services._db.mysql.guard import Baseline
from pytest_services._db.mysql.restore import Restorer, is_versioned, mentioned
from pytest_services._db.state import State
from pytest_services.exceptions import MySQLError

#: Past this size the log is emptied (``RESET MASTER``) at the next reset.
MAX_BINLOG_BYTES = 64 * 1024 * 1024
#: Seconds a reset waits for a lock that another connection holds before it ends them all.
LOCK_WAIT = 2
#: Times a reset reads the log again because it moved while the reset ran.
ROUNDS = 10
#: MySQL's "lock wait timeout exceeded" errors (metadata and row locks).
_LOCK_ERRORS = {1205}


class MySQLCleaner:
    """Resets the default database of one server; ``reset(test)`` before each test."""

    def __init__(
        self, connect: Callable[[], Any], state: State, keep: Optional[set[str]] = None
    ) -> None:
        self._connect = connect
        self.state = state
        self.database: str = state["database"]
        #: Databases that survive every reset besides those of the first one: those that
        #: ``mysql_database_getter`` made.  Shared with it, so it sees later additions.
        self.keep = keep if keep is not None else set()
        self._connection: Any = None
        self._position: Position | None = None  # None: look at the whole log
        self._baseline: Baseline | None = None
        self._restorer = Restorer(self._query, self._use, state)
        self._previous: str | None = None  # the test the last reset ran before
        self._broken = ""
        #: What InnoDB's table statistics said of the default database's auto-increment
        #: counters (how many tables, and their sum) when they were last as prepared.
        self._counters_seen: Optional[str] = None

    # -- the connection ------------------------------------------------------------------

    def _cursor(self) -> Any:
        if self._connection is None:
            connection = self._connect()
            cursor = connection.cursor()
            for setting in (
                "sql_log_bin = 0",
                "foreign_key_checks = 0",
                f"lock_wait_timeout = {LOCK_WAIT}",
                f"innodb_lock_wait_timeout = {LOCK_WAIT}",
                "group_concat_max_len = 67108864",
            ):
                cursor.execute(f"SET SESSION {setting}")
            self._connection = connection
        return self._connection.cursor()

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        cursor = self._cursor()
        cursor.execute(sql, args or None)  # without arguments, % is no placeholder
        return list(cursor.fetchall())

    def _use(self, database: str) -> None:
        self._cursor().execute(f"USE {quote(database)}")

    def close(self) -> None:
        """Close the cleaner's connection."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # -- the reset -------------------------------------------------------------------------

    def reset(self, test: str = "") -> None:
        """Make the default database what the state describes; cheap when nothing changed.

        ``test`` names the test that runs next, for the messages of the reset after it.
        """
        try:
            if self._broken:
                raise MySQLError(self._broken)
            try:
                self._reset()
            except Exception as exc:
                if _error_code(exc) not in (*_LOCK_ERRORS, 2006, 2013):
                    raise
                # A lock of a connection we could not see, or ours was killed: end every
                # other connection, and do it once more on a new one.
                self.close()
                self._end_everyone()
                self._reset()
        finally:
            self._previous = test or None

    def _who(self) -> str:
        if self._previous is None:
            return "a test or fixture before the first mysql_clean"
        return self._previous

    def _reset(self) -> None:
        if self._baseline is None:
            self._baseline = Baseline.read(self._query, self.database)
            self._restorer.complete_state()
        baseline, problems = self._baseline, []
        position, values, busy, found, signature = self._probe(baseline)
        changed = baseline.changed_globals(values)
        if position == self._position and not changed and not busy:
            if found is None and signature != self._counters_seen:
                found, signature = self._counters()  # one moved, or a table was read again
            if found is not None:
                self._put_back_counters(found, signature)
            return
        self._counters_seen = None
        guard.put_back_globals(self._query, changed)
        if busy:
            guard.end_connections(self._query, baseline.lock_info)
            guard.rollback_prepared_xa(self._query)
            position = self._master_position()  # what they did before they ended
        for _ in range(ROUNDS):
            if position == self._position:
                break
            since = self._position or (str(self._query("SHOW BINARY LOGS")[0][0]), 4)
            changes = read_changes(self._query, since, self.database)
            if changes is None:  # the log was emptied: anything may have changed
                changes = Changes(
                    ddl=["RESET MASTER"], statements=True, accounts=True, unknown=True, end=position
                )
            problems += self._restore(changes)
            self._position = changes.end
            position = self._master_position()
        else:
            raise MySQLError(
                f"mysql_clean cannot finish: the binary log keeps moving, {self._who()} left "
                "something running that writes (an event, a connection in a thread)."
            )
        self._put_back_counters(*self._counters())
        self._trim_log()
        if problems:
            raise MySQLError("\n".join(problems))

    def _put_back_counters(self, found: list[Any], signature: Optional[str]) -> None:
        moved = self._restorer.counters(found)
        self._counters_seen = None if moved else signature

    def _counters(self) -> tuple[list[Any], Optional[str]]:
        assert self._baseline is not None
        return counters.read(self._query, self._baseline, self.database)

    def _probe(
        self, baseline: Baseline
    ) -> tuple[Position, list[Any], bool, Optional[list[Any]], Optional[str]]:
        """In one round trip: the log's position, the watched globals, whether another
        connection holds a transaction or a lock, and the auto-increment counters -- or,
        once they are known to be as prepared, only their count and sum in InnoDB's table
        statistics, which is cheaper and the same for as long as no counter moved (they
        only move up: down takes DDL, which the log shows)."""
        busy = (
            "(SELECT COUNT(*) FROM information_schema.INNODB_TRX "
            "WHERE trx_mysql_thread_id <> CONNECTION_ID())"
        )
        if baseline.lock_info:
            busy += (
                " + (SELECT COUNT(*) FROM information_schema.METADATA_LOCK_INFO "
                "WHERE THREAD_ID <> CONNECTION_ID())"
            )
        columns: list[counters.Column] = [(f"@@global.{name}", ()) for name in baseline.watched]
        columns.append((busy, ()))
        signed = counters.signature_column(baseline, self.database)
        if signed is not None:
            columns.append(signed)
        listed = signed is None or self._counters_seen is None
        if listed:
            columns.append(counters.listed_column(self.database))
        arguments = tuple(argument for _, values in columns for argument in values)
        selected = ", ".join(sql for sql, _ in columns)
        cursor = self._cursor()
        cursor.execute(f"SHOW MASTER STATUS; SELECT {selected}", arguments)
        name, offset = cursor.fetchall()[0][:2]
        cursor.nextset()
        row = list(cursor.fetchall()[0])
        found = counters.parse(row.pop()) if listed else None
        signature = str(row.pop()) if signed is not None else None
        return (str(name), int(offset)), row[:-1], bool(row[-1]), found, signature

    def _master_position(self) -> Position:
        name, offset = self._query("SHOW MASTER STATUS")[0][:2]
        return str(name), int(offset)

    def _trim_log(self) -> None:
        """Keep the log small, and never on its first file: a test's ``RESET MASTER`` then
        shows, as our file is gone."""
        assert self._position is not None
        if self._position[1] > MAX_BINLOG_BYTES:
            self._query("RESET MASTER")
        if self._position[1] > MAX_BINLOG_BYTES or self._position[0].endswith(".000001"):
            self._query("FLUSH BINARY LOGS")
            self._position = self._master_position()

    def _end_everyone(self) -> None:
        for (thread,) in self._query(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() "
            "AND COMMAND NOT IN ('Daemon', 'Binlog Dump') AND USER <> 'system user'"
        ):
            try:
                self._query(f"KILL {int(thread)}")
            except Exception as exc:  # it ended by itself meanwhile
                if _error_code(exc) != 1094:  # unknown thread id
                    raise

    # -- what the log says -----------------------------------------------------------------

    def _restore(self, changes: Changes) -> list[str]:
        """Undo ``changes``; return what could not be undone."""
        assert self._baseline is not None
        tables_of_state = set(self.state["tables"])
        touched = set(tables_of_state) if changes.statements else set(changes.tables)
        touched |= {name for name in tables_of_state if mentioned(name, changes.ddl)}
        problems = self._repair_template(changes, touched)
        if changes.ddl:
            keep = self._baseline.databases | self.keep
            touched |= self._restorer.structure(changes.ddl, keep, self._baseline.events)
        if changes.accounts:
            problems += guard.put_back_accounts(self._query, self._baseline, self._who())
        for name in sorted(touched & tables_of_state):
            if is_versioned(self.state["tables"][name]):
                problems.append(
                    "mysql_clean cannot put back the history of the system-versioned table "
                    f"{quote(name)}, written by {self._who()}: its rows are back, its history "
                    "is not. Leave such tables out of the prepared state, or do not write to "
                    "them in tests that use mysql_clean."
                )
        self._restorer.rows(touched)
        return problems

    def _repair_template(self, changes: Changes, touched: set[str]) -> list[str]:
        """Copy back into the template what a test wrote there, from the default database
        where it is still as prepared; fail for good where it is not."""
        damaged = set(changes.template_tables) & set(self.state["tables"])
        if changes.template_ddl:
            damaged = set(self.state["tables"])
        elif changes.unknown:  # what is still there is taken as it is
            damaged |= {
                name
                for name in self.state["tables"]
                if self._restorer.current_create(name, TEMPLATE) is None
            }
        if not damaged:
            return []
        gone = not self._query("SHOW DATABASES LIKE %s", (TEMPLATE,))
        lost = sorted(
            name
            for name in damaged
            if name in touched
            or self._restorer.current_create(name) != self.state["tables"][name]["create"]
        )
        if lost:
            tables = ", ".join(quote(name) for name in lost)
            what = (
                f"dropped the database {TEMPLATE}, where mysql_clean keeps the prepared rows, "
                f"and the tables {tables}"
                if gone
                else f"changed both the table {tables} and its copy in {TEMPLATE}"
                if len(lost) == 1
                else f"changed both the tables {tables} and their copies in {TEMPLATE}"
            )
            self._broken = (
                f"{self._who()} {what}: their prepared rows are lost for this session, and "
                f"every later mysql_clean fails. Leave {TEMPLATE} alone (a helper that drops "
                "every database must skip it)."
            )
            raise MySQLError(self._broken)
        for name in sorted(damaged):
            self._restorer.copy_to_template(name)
        return []


def _error_code(exc: BaseException) -> object:
    """The server's error number of a client error (its first argument), or None."""
    return exc.args[0] if exc.args else None
