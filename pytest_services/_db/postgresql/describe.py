"""What a prepared PostgreSQL state is, in SQL: its description, its template, its relations.

Plain code, no pytest.  After the loaders ran, :func:`snapshot` records the sequences'
values, and :func:`fill_template` copies the default database into the template database
(``CREATE DATABASE ... TEMPLATE``) that the per-test reset copies rows, or the whole
database, back from.  The reset reads the server's write-ahead log through ``pg_walinspect``,
installed in the ``postgres`` database: nothing of ours is in the default database.
"""

from __future__ import annotations

from typing import Any, Optional

from pytest_services._db.state import State

__all__ = [
    "CONTROL_DATABASE",
    "RELATIONS",
    "RELATIONS_OF",
    "TEMPLATE",
    "empty_state",
    "fill_template",
    "literal",
    "quote",
    "sequences",
    "setval",
    "snapshot",
]

#: The database the default one is copied back from.
TEMPLATE = "pytest_services_template"
#: Where the reset connects to end other connections, read the log and recreate databases.
CONTROL_DATABASE = "postgres"
#: Every relation of the database's own schemas that holds data: its file number (what the
#: log names), the table it belongs to, and its kind (``r`` table, ``S`` sequence, ``m``
#: materialized view) and persistence (``u``: unlogged, never in the log).  Indexes and TOAST
#: tables belong to their table.
RELATIONS = """
SELECT pg_relation_filenode(part.oid), format('%I.%I', n.nspname, c.relname), c.relkind,
       c.relpersistence
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (
    SELECT c.oid
    UNION ALL SELECT c.reltoastrelid WHERE c.reltoastrelid <> 0
    UNION ALL SELECT i.indexrelid FROM pg_index i WHERE i.indrelid IN (c.oid, c.reltoastrelid)
) AS part (oid)
WHERE c.relkind IN ('r', 'm', 'S')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
"""
#: The files of some tables (``RELATIONS`` for the names given).
RELATIONS_OF = (
    RELATIONS.replace("%", "%%") + "  AND format('%%I.%%I', n.nspname, c.relname) = ANY(%s)\n"
)
_SEQUENCES = (
    "SELECT format('%I.%I', schemaname, sequencename), last_value, start_value FROM pg_sequences"
)


def quote(name: str) -> str:
    """Quote a database, schema or table name for SQL."""
    return '"{}"'.format(name.replace('"', '""'))


def literal(text: str) -> str:
    """Quote a text for SQL."""
    return "'{}'".format(text.replace("'", "''"))


def setval(name: str, value: Optional[int], start: int) -> str:
    """The call that sets the sequence ``name`` back to the state's ``[last_value,
    start_value]`` (``last_value`` None: never used)."""
    called = "true" if value is not None else "false"
    return f"setval({literal(name)}, {int(value or start)}, {called})"


def sequences(connection: Any) -> dict[str, list[Any]]:
    """Each sequence's ``[last_value, start_value]`` (``last_value`` None: never used)."""
    rows = connection.execute(_SEQUENCES).fetchall()
    return {name: [last, start] for name, last, start in rows}


def snapshot(connection: Any, database: str) -> State:
    """The description of the default database that the reset restores."""
    return {"database": database, "template": TEMPLATE, "sequences": sequences(connection)}


def empty_state(database: str) -> State:
    """The description of an empty default database."""
    return {"database": database, "template": TEMPLATE, "sequences": {}}


def fill_template(control: Any, state: State) -> None:
    """Copy the default database into the template database, and install what the reset
    reads the log with (on a connection to the control database, with no other one open)."""
    control.execute(
        f"CREATE DATABASE {quote(state['template'])} TEMPLATE {quote(state['database'])}"
    )
    control.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
