"""What the server's binary log says a test changed, for the per-test reset.

Plain code, no pytest.  The session's server logs rows (``binlog_format=ROW``): each write
names its table in a ``Table_map`` event, and every other change (DDL, accounts, events,
``TRUNCATE``) is a ``Query`` event holding its statement.  A ``Query`` event that writes rows
(``INSERT``, ``CALL``...) means someone logged statements instead of rows
(``binlog_format=STATEMENT``): what its triggers and functions wrote is not named, so every
table must be restored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytest_services._db.mysql.describe import TEMPLATE

__all__ = ["Changes", "Position", "read_changes"]

#: A place in the log: file name and byte offset.
Position = tuple[str, int]
Query = Callable[..., list[tuple[Any, ...]]]

_TABLE_MAP = re.compile(r"\((.*)\)\s*$")
#: Statements of the log that change nothing by themselves.
_QUIET = re.compile(r"^(BEGIN|COMMIT|ROLLBACK|XA |SAVEPOINT|RELEASE SAVEPOINT)", re.IGNORECASE)
#: Statements that write rows when logged as statements.
_WRITES_ROWS = re.compile(
    r"^(INSERT|UPDATE|DELETE|REPLACE|LOAD|CALL|SELECT|DO|WITH)\b", re.IGNORECASE
)
_ACCOUNTS = re.compile(
    r"^(CREATE|DROP|ALTER|RENAME)\s+(USER|ROLE)\b|^(GRANT|REVOKE)\b|^SET\s+(PASSWORD|DEFAULT\s+ROLE)\b",
    re.IGNORECASE,
)
#: What the log puts before a statement: the current database, comments.
_PREFIX = re.compile(r"^\s*(use\s+`(?:[^`]|``)*`;\s*)?(/\*.*?\*/\s*)*", re.DOTALL)


@dataclass
class Changes:
    """What changed between two places of the log."""

    #: Tables of the default database whose rows were written.
    tables: set[str] = field(default_factory=set)
    #: Tables of the template database whose rows were written.
    template_tables: set[str] = field(default_factory=set)
    #: DDL and other statements that are not row writes.
    ddl: list[str] = field(default_factory=list)
    #: Rows were logged as statements: which tables they reached is unknown.
    statements: bool = False
    #: Users, roles or grants changed (statements, or rows of the ``mysql`` database).
    accounts: bool = False
    #: The log was emptied since: anything may have changed.
    unknown: bool = False
    #: The place where reading stopped.
    end: Position = ("", 0)

    @property
    def template_ddl(self) -> bool:
        """Whether a statement names the template database."""
        return any(TEMPLATE in statement for statement in self.ddl)


def read_changes(query: Query, since: Position, database: str) -> Changes | None:
    """What the log holds after ``since``; None when that place is gone from the log
    (``RESET MASTER`` or ``PURGE BINARY LOGS`` emptied it)."""
    logs = [(str(row[0]), int(row[1])) for row in query("SHOW BINARY LOGS")]
    names = [name for name, _ in logs]
    if since[0] not in names or since[1] > dict(logs)[since[0]]:
        return None
    changes = Changes(end=since)
    prefix, template = f"{database}.", f"{TEMPLATE}."
    for log in names[names.index(since[0]) :]:
        start = since[1] if log == since[0] else 4
        for row in query(f"SHOW BINLOG EVENTS IN '{log}' FROM {start}"):
            kind, end, info = str(row[2]), int(row[4]), str(row[5])
            changes.end = (log, end)
            if kind == "Table_map":
                match = _TABLE_MAP.search(info)
                name = match.group(1) if match else ""
                if name.startswith(prefix):
                    changes.tables.add(name[len(prefix) :])
                elif name.startswith(template):
                    changes.template_tables.add(name[len(template) :])
                elif name.startswith("mysql."):
                    changes.accounts = True
            elif kind == "Query":
                _statement(changes, _PREFIX.sub("", info, count=1).strip())
        if changes.end[0] != log:  # an empty log after ours: it starts past its header
            changes.end = (log, int(dict(logs)[log]))
    return changes


def _statement(changes: Changes, statement: str) -> None:
    if not statement or _QUIET.match(statement):
        return
    if _ACCOUNTS.match(statement):
        changes.accounts = True
    elif _WRITES_ROWS.match(statement):
        changes.statements = True
        if TEMPLATE not in statement:
            return
    changes.ddl.append(statement)
