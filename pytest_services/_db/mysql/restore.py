"""Putting the default database back: its definitions, its rows, and the template's copy.

Plain code, no pytest.  :class:`Restorer` does what :mod:`pytest_services._db.mysql.clean`
decides: undo DDL (tables, views, triggers, routines, events, the database's character
set, extra databases), copy rows back from the template database, and repair the template
from the default database where a test wrote to it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from pytest_services._db.mysql.describe import TEMPLATE, normalise, quote
from pytest_services._db.state import State

__all__ = ["Restorer", "is_sequence", "is_versioned", "mentioned"]

Query = Callable[..., list[tuple[Any, ...]]]
_SEQUENCE = re.compile(r"\bSEQUENCE=1\b")
#: Statements that can change a database's options, or events.
_SCHEMA_DDL = re.compile(r"\b(DATABASE|SCHEMA)\b|^RESET MASTER$", re.IGNORECASE | re.MULTILINE)
_EVENT_DDL = re.compile(r"\bEVENT\b|^RESET MASTER$", re.IGNORECASE | re.MULTILINE)
_VERSIONED = re.compile(r"\bWITH SYSTEM VERSIONING\b", re.IGNORECASE)


def is_sequence(table: dict[str, Any]) -> bool:
    """Whether a table of the state is a MariaDB sequence (one row, no ``DELETE``)."""
    return bool(table.get("sequence")) or bool(_SEQUENCE.search(table["create"]))


def is_versioned(table: dict[str, Any]) -> bool:
    """Whether a table of the state keeps the history of its rows."""
    return bool(_VERSIONED.search(table["create"]))


def mentioned(name: str, statements: Iterable[str]) -> bool:
    """Whether a table name occurs as a word in any of ``statements``."""
    pattern = re.compile(rf"(?<![\w$]){re.escape(name)}(?![\w$])", re.IGNORECASE)
    return any(pattern.search(statement) for statement in statements)


class Restorer:
    """Restores the default database described by ``state`` over ``query``."""

    def __init__(self, query: Query, use: Callable[[str], None], state: State) -> None:
        self._query, self._use, self.state = query, use, state
        self.database: str = state["database"]
        self.db = quote(self.database)

    def current_create(self, name: str, schema: str | None = None) -> str | None:
        """``SHOW CREATE TABLE`` of a table, normalised; None when it does not exist."""
        found = self._query(
            "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (schema or self.database, name),
        )
        return self._show_create(schema or self.database, name) if found else None

    def _show_create(self, schema: str, name: str) -> str:
        target = f"{quote(schema)}.{quote(name)}"
        return normalise(str(self._query(f"SHOW CREATE TABLE {target}")[0][1]))

    def complete_state(self) -> None:
        """A state prepared by an older version lacks the events and the character set:
        take them as the first reset finds them."""
        if "charset" not in self.state:
            found = self._query(
                "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME "
                "FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                (self.database,),
            )
            if found:
                self.state["charset"] = list(found[0])
        if "events" not in self.state:
            self.state["events"] = {
                str(name): str(
                    self._query(f"SHOW CREATE EVENT {quote(schema)}.{quote(name)}")[0][3]
                )
                for schema, name in self._query(
                    "SELECT EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS "
                    "WHERE EVENT_SCHEMA = %s",
                    (self.database,),
                )
            }

    # -- the template -----------------------------------------------------------------------

    def copy_to_template(self, name: str) -> None:
        """Make the template's copy of table ``name`` from the default database's."""
        tpl = quote(TEMPLATE)
        self._query(f"CREATE DATABASE IF NOT EXISTS {tpl}")
        self._query(f"DROP TABLE IF EXISTS {tpl}.{quote(name)}")
        self._query(f"CREATE TABLE {tpl}.{quote(name)} LIKE {self.db}.{quote(name)}")
        columns = ", ".join(quote(column) for column in self.state["tables"][name]["columns"])
        self._query(
            f"INSERT INTO {tpl}.{quote(name)} ({columns}) "
            f"SELECT {columns} FROM {self.db}.{quote(name)}"
        )

    # -- definitions ------------------------------------------------------------------------

    def structure(
        self, ddl: Iterable[str], keep: set[str], other_events: set[tuple[str, str]]
    ) -> set[str]:
        """Undo DDL: return the tables whose rows must be restored too.  Databases not in
        ``keep`` are dropped, and so are events outside the default database not in
        ``other_events``."""
        state, db, query = self.state, self.db, self._query
        ddl = list(ddl)
        databases = {str(name) for (name,) in query("SHOW DATABASES")}
        for name in databases - keep - {self.database, TEMPLATE}:
            query(f"DROP DATABASE {quote(name)}")
        if self.database not in databases or _SCHEMA_DDL.search("\n".join(ddl)):
            self._charset()
        self._use(self.database)
        current: dict[str, str] = dict(
            query(
                "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = %s",
                (self.database,),
            )
        )
        for name, kind in current.items():
            if kind == "VIEW":
                query(f"DROP VIEW {db}.{quote(name)}")
        restore = {name for name in state["tables"] if mentioned(name, ddl)}
        for name, kind in list(current.items()):
            if kind == "VIEW":
                continue
            wanted = state["tables"].get(name)
            if wanted is None:
                query(f"DROP TABLE {db}.{quote(name)}")
            elif self._show_create(self.database, name) != wanted["create"]:
                query(f"DROP TABLE {db}.{quote(name)}")
                del current[name]
        for name, table in state["tables"].items():
            if name not in current:
                query(table["create"])
                restore.add(name)
        for name, kind in query(
            "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES "
            "WHERE ROUTINE_SCHEMA = %s",
            (self.database,),
        ):
            query(f"DROP {kind} {db}.{quote(name)}")
        for routine in state["routines"].values():
            query(routine["create"])
        self._create_views()
        self.recreate_triggers(None)
        if self.state.get("events") or _EVENT_DDL.search("\n".join(ddl)):
            self._events(keep, other_events)
        return restore

    def _charset(self) -> None:
        charset = self.state.get("charset")
        options = f" CHARACTER SET {charset[0]} COLLATE {charset[1]}" if charset else ""
        self._query(f"CREATE DATABASE IF NOT EXISTS {self.db}{options}")
        if charset:
            found = self._query(
                "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME "
                "FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                (self.database,),
            )
            if [list(row) for row in found] != [list(charset)]:
                self._query(f"ALTER DATABASE {self.db}{options}")

    def _events(self, keep: set[str], other_events: set[tuple[str, str]]) -> None:
        for schema, name in self._query(
            "SELECT EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS"
        ):
            if schema == self.database or (
                (schema, name) not in other_events and schema not in keep
            ):
                self._query(f"DROP EVENT {quote(schema)}.{quote(name)}")
        for create in self.state.get("events", {}).values():
            self._query(create)

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

    def recreate_triggers(self, tables: set[str] | None) -> None:
        """Drop and create the triggers of ``tables`` (None: all) as the state has them."""
        db = self.db
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

    # -- rows -------------------------------------------------------------------------------

    def rows(self, tables: set[str]) -> None:
        """Copy the rows of ``tables`` (and of the tables that refer to them) back from the
        template, without firing triggers."""
        state, db = self.state, self.db
        wanted = _with_children(tables & set(state["tables"]), state.get("children", {}))
        if not wanted:
            return
        with_triggers = {t["table"] for t in state["triggers"].values()} & wanted
        if with_triggers:  # the copy must not fire them
            self._use(self.database)
            for (trigger_name,) in self._query(
                "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s "
                "AND EVENT_OBJECT_TABLE IN (" + ", ".join(["%s"] * len(with_triggers)) + ")",
                (self.database, *sorted(with_triggers)),
            ):
                self._query(f"DROP TRIGGER {db}.{quote(trigger_name)}")
        for name in sorted(wanted):
            table, target = state["tables"][name], f"{db}.{quote(name)}"
            columns = ", ".join(quote(column) for column in table["columns"])
            if not is_sequence(table):  # a sequence's one row is replaced by the INSERT
                self._query(f"DELETE FROM {target}")
            self._query(
                f"INSERT INTO {target} ({columns}) SELECT {columns} "
                f"FROM {quote(TEMPLATE)}.{quote(name)}"
            )
        if with_triggers:
            for trigger in state["triggers"].values():
                if trigger["table"] in with_triggers:
                    self._query(trigger["create"])

    def counters(self, found: Iterable[tuple[str, Any]]) -> bool:
        """Set back auto-increment counters that moved without a trace in the log: InnoDB
        keeps a counter's advance when the transaction that made it rolls back.  Tell
        whether one had moved."""
        tables, moved = self.state["tables"], False
        for name, counter in found:
            wanted = tables.get(name, {}).get("auto_increment")
            if wanted and int(counter) != int(wanted):
                target = f"{self.db}.{quote(name)}"
                self._query(f"ALTER TABLE {target} AUTO_INCREMENT = {int(wanted)}")
                moved = True
        return moved


def _with_children(tables: set[str], children: dict[str, list[str]]) -> set[str]:
    """``tables`` and every table that refers to one of them, directly or not."""
    found, todo = set(tables), list(tables)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found
