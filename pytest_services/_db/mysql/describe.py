"""How a MySQL default database is described, and copied into the template database.

Plain code, no pytest.  :func:`snapshot` records what the per-test reset
(:mod:`pytest_services._db.mysql.clean`) restores -- tables with their definitions and
columns, counters, views, triggers, routines, events, foreign-key children, the database's
character set -- and
:func:`fill_template` copies every table's rows into :data:`TEMPLATE`, where the reset
takes them from.
"""

from __future__ import annotations

import re
from typing import Any

from pytest_services._db.state import State

__all__ = ["TEMPLATE", "empty_state", "fill_template", "normalise", "quote", "snapshot"]

#: The database that holds a copy of every table of the prepared state.
TEMPLATE = "pytest_services_template"
_AUTO_INCREMENT = re.compile(r" AUTO_INCREMENT=\d+")


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


def _create(cursor: Any, kind: str, db: str, name: str) -> str:
    """The ``CREATE`` statement of trigger or routine ``name`` (``kind`` TRIGGER, PROCEDURE
    or FUNCTION) as the server shows it."""
    return str(_rows(cursor, f"SHOW CREATE {kind} {db}.{quote(name)}")[0][2])


def snapshot(cursor: Any, database: str) -> State:
    """Describe ``database``: its tables (definition, columns, counter), views, triggers,
    routines, events, character set, and which tables refer to which by foreign key."""
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
            "sequence": kind == "SEQUENCE",
        }
    triggers = (
        "TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS WHERE "
        "TRIGGER_SCHEMA = %s ORDER BY ACTION_ORDER"
    )
    for name, table in _rows(cursor, f"SELECT {triggers}", (database,)):
        state["triggers"][name] = {"table": table, "create": _create(cursor, "TRIGGER", db, name)}
    routines = (
        "ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s"
    )
    for name, kind in _rows(cursor, f"SELECT {routines}", (database,)):
        state["routines"][name] = {"type": kind, "create": _create(cursor, kind, db, name)}
    events = "EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s"
    state["events"] = {
        name: str(_rows(cursor, f"SHOW CREATE EVENT {db}.{quote(name)}")[0][3])
        for (name,) in _rows(cursor, f"SELECT {events}", (database,))
    }
    state["charset"] = list(
        _rows(
            cursor,
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME "
            "FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
            (database,),
        )[0]
    )
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
