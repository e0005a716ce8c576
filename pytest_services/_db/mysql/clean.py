"""Put the default database back in its prepared state, doing only what the last test needs.

Plain code, no pytest.  A session's server keeps a binary log of rows (never synced).  Its
position tells in one query whether anything was written since the last reset; its events
name the tables whose rows changed, and show any DDL.  A reset then:

1. ends the transactions other connections left open (``KILL``: they roll back, and were
   never in the log, which holds committed changes only);
2. when DDL ran: drops extra databases, tables, views, triggers and routines, recreates the
   missing or changed ones from their recorded definitions;
3. restores the rows of every table named by the log (and of the tables that refer to them
   by foreign key, whose cascades the log does not show) from the template database, and
   the table's auto-increment counter.

The reset's own statements are kept out of the log (``sql_log_bin = 0``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from pytest_services._db.mysql.describe import TEMPLATE, normalise, quote
from pytest_services._db.state import State

#: Past this size the log is emptied (``RESET MASTER``) at the next reset.
MAX_BINLOG_BYTES = 64 * 1024 * 1024
#: Seconds a reset waits for a lock that another connection holds before it ends them all.
LOCK_WAIT = 2
_TABLE_MAP = re.compile(r"\((.*)\)\s*$")
_QUIET = {"BEGIN", "COMMIT", "ROLLBACK"}
#: MySQL's "lock wait timeout exceeded" errors (metadata and row locks).
_LOCK_ERRORS = {1205}


class MySQLCleaner:
    """Resets the default database of one server; ``reset()`` before each test."""

    def __init__(self, connect: Callable[[], Any], state: State) -> None:
        self._connect = connect
        self.state = state
        self.database: str = state["database"]
        self._connection: Any = None
        self._position: tuple[str, int] | None = None  # None: look at the whole log
        self._databases: set[str] | None = None

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
            ):
                cursor.execute(f"SET SESSION {setting}")
            self._connection = connection
        return self._connection.cursor()

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        cursor = self._cursor()
        cursor.execute(sql, args)
        return list(cursor.fetchall())

    def close(self) -> None:
        """Close the cleaner's connection."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # -- the reset -------------------------------------------------------------------------

    def reset(self) -> None:
        """Make the default database what the state describes; cheap when nothing changed."""
        try:
            self._reset()
        except Exception as exc:
            if _error_code(exc) not in (*_LOCK_ERRORS, 2006, 2013):
                raise
            # A lock held by an idle connection, or our connection was killed: end every
            # other connection, and do it once more on a new one.
            self.close()
            self._end_other_connections(everyone=True)
            self._reset()

    def _reset(self) -> None:
        self._end_other_connections(everyone=False)
        if self._databases is None:
            self._databases = {name for (name,) in self._query("SHOW DATABASES")}
        position = self._binlog_position()
        if position == self._position:
            self._restore_counters()
            return
        tables, ddl = self._changes_since(self._position)
        if ddl:
            tables |= self._restore_structure(ddl)
        self._restore_rows(tables)
        self._restore_counters()
        self._position = self._binlog_position()
        if self._position[1] > MAX_BINLOG_BYTES:
            self._query("RESET MASTER")
            self._position = self._binlog_position()

    def _restore_counters(self) -> None:
        """Set back auto-increment counters that moved without a trace in the log: InnoDB
        keeps a counter's advance when the transaction that made it rolls back."""
        tables = self.state["tables"]
        for name, counter in self._query(
            "SELECT TABLE_NAME, AUTO_INCREMENT FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = %s AND AUTO_INCREMENT IS NOT NULL",
            (self.database,),
        ):
            wanted = tables.get(name, {}).get("auto_increment")
            if wanted and int(counter) != int(wanted):
                target = f"{quote(self.database)}.{quote(name)}"
                self._query(f"ALTER TABLE {target} AUTO_INCREMENT = {int(wanted)}")

    def _end_other_connections(self, everyone: bool) -> None:
        if everyone:
            sql = (
                "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() "
                "AND COMMAND NOT IN ('Daemon', 'Binlog Dump') AND USER <> 'system user'"
            )
        else:  # only those in a transaction: idle connections keep working
            sql = (
                "SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX "
                "WHERE trx_mysql_thread_id <> CONNECTION_ID()"
            )
        for (thread,) in self._query(sql):
            try:
                self._query(f"KILL {int(thread)}")
            except Exception as exc:  # it ended by itself meanwhile
                if _error_code(exc) != 1094:  # unknown thread id
                    raise

    def _binlog_position(self) -> tuple[str, int]:
        name, position = self._query("SHOW MASTER STATUS")[0][:2]
        return str(name), int(position)

    def _changes_since(self, since: tuple[str, int] | None) -> tuple[set[str], list[str]]:
        """The default database's tables whose rows changed, and the DDL statements run."""
        logs = [str(row[0]) for row in self._query("SHOW BINARY LOGS")]
        if since is not None and since[0] in logs:
            logs = logs[logs.index(since[0]) :]
        tables: set[str] = set()
        ddl: list[str] = []
        prefix = f"{self.database}."
        for log in logs:
            start = since[1] if since is not None and log == since[0] else 4
            for row in self._query(f"SHOW BINLOG EVENTS IN '{log}' FROM {start}"):
                kind, info = str(row[2]), str(row[5])
                if kind == "Table_map":
                    match = _TABLE_MAP.search(info)
                    if match and match.group(1).startswith(prefix):
                        tables.add(match.group(1)[len(prefix) :])
                elif kind == "Query" and info.strip().upper() not in _QUIET:
                    ddl.append(info)
        return tables, ddl

    def _restore_structure(self, ddl: Iterable[str]) -> set[str]:
        """Undo DDL: return the tables whose rows must be restored too."""
        state, db = self.state, quote(self.database)
        assert self._databases is not None
        for (name,) in self._query("SHOW DATABASES"):
            if name not in self._databases | {self.database}:
                self._query(f"DROP DATABASE {quote(name)}")
        self._query(f"CREATE DATABASE IF NOT EXISTS {db}")
        self._cursor().execute(f"USE {db}")
        current = dict(
            self._query(
                "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = %s",
                (self.database,),
            )
        )
        for name, kind in current.items():
            if kind == "VIEW":
                self._query(f"DROP VIEW {db}.{quote(name)}")
        restore = {name for name in state["tables"] if _mentioned(name, ddl)}
        for name, kind in list(current.items()):
            if kind == "VIEW":
                continue
            wanted = state["tables"].get(name)
            if wanted is None:
                self._query(f"DROP TABLE {db}.{quote(name)}")
            elif (
                normalise(self._query(f"SHOW CREATE TABLE {db}.{quote(name)}")[0][1])
                != (wanted["create"])
            ):
                self._query(f"DROP TABLE {db}.{quote(name)}")
                del current[name]
        for name, table in state["tables"].items():
            if name not in current:
                self._query(table["create"])
                restore.add(name)
        for name, kind in self._query(
            "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES "
            "WHERE ROUTINE_SCHEMA = %s",
            (self.database,),
        ):
            self._query(f"DROP {kind} {db}.{quote(name)}")
        for routine in state["routines"].values():
            self._query(routine["create"])
        self._create_views()
        self._recreate_triggers(None)
        return restore

    def _create_views(self) -> None:
        """Create the state's views; a view that uses another waits for it."""
        pending = list(self.state["views"].values())
        while pending:
            failed = []
            for create in pending:
                try:
                    self._query(create)
                except Exception:
                    failed.append(create)
            if len(failed) == len(pending):
                self._query(failed[0])  # raises the real error
            pending = failed

    def _recreate_triggers(self, tables: set[str] | None) -> None:
        """Drop and create the triggers of ``tables`` (None: all) as the state has them."""
        db = quote(self.database)
        for name, table in self._query(
            "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS "
            "WHERE TRIGGER_SCHEMA = %s",
            (self.database,),
        ):
            if tables is None or table in tables:
                self._query(f"DROP TRIGGER {db}.{quote(name)}")
        for trigger in self.state["triggers"].values():
            if tables is None or trigger["table"] in tables:
                self._query(trigger["create"])

    def _restore_rows(self, tables: set[str]) -> None:
        state, db = self.state, quote(self.database)
        wanted = _with_children(tables & set(state["tables"]), state.get("children", {}))
        if not wanted:
            return
        with_triggers = {t["table"] for t in state["triggers"].values()} & wanted
        if with_triggers:  # the copy must not fire them
            self._query(f"USE {db}")
            for (trigger_name,) in self._query(
                "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s "
                "AND EVENT_OBJECT_TABLE IN (" + ", ".join(["%s"] * len(with_triggers)) + ")",
                (self.database, *sorted(with_triggers)),
            ):
                self._query(f"DROP TRIGGER {db}.{quote(trigger_name)}")
        for name in sorted(wanted):
            table, target = state["tables"][name], f"{db}.{quote(name)}"
            columns = ", ".join(quote(column) for column in table["columns"])
            self._query(f"DELETE FROM {target}")
            self._query(
                f"INSERT INTO {target} ({columns}) SELECT {columns} "
                f"FROM {quote(TEMPLATE)}.{quote(name)}"
            )
        if with_triggers:
            for trigger in state["triggers"].values():
                if trigger["table"] in with_triggers:
                    self._query(trigger["create"])


def _error_code(exc: BaseException) -> object:
    """The server's error number of a client error (its first argument), or None."""
    return exc.args[0] if exc.args else None


def _mentioned(name: str, statements: Iterable[str]) -> bool:
    """Whether a table name occurs as a word in any of ``statements``."""
    pattern = re.compile(rf"(?<![\w$]){re.escape(name)}(?![\w$])", re.IGNORECASE)
    return any(pattern.search(statement) for statement in statements)


def _with_children(tables: set[str], children: dict[str, list[str]]) -> set[str]:
    """``tables`` and every table that refers to one of them, directly or not."""
    found, todo = set(tables), list(tables)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found
