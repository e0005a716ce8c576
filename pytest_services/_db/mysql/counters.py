"""The auto-increment counters of the default database, as ``mysql_clean`` reads them.

Plain code, no pytest.  A counter moves without a trace in the binary log when the
transaction that moved it rolls back, so every reset looks at them.  Listing them
(``information_schema.TABLES``) opens every table; MariaDB's InnoDB keeps them in its table
statistics too, where their count and sum (the *signature*) cost a third as much.  Counters
only move up between two entries of the log (down takes DDL, which the log shows), so once a
reset saw them as prepared, the same signature means that they still are.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Optional

from pytest_services._db.mysql.guard import Baseline

__all__ = ["Column", "listed_column", "parse", "plain_name", "read", "signature_column"]

#: An expression of a ``SELECT``, and the arguments of its placeholders.
Column = tuple[str, tuple[object, ...]]
Query = Callable[[str, tuple[object, ...]], list[tuple[Any, ...]]]


def plain_name(name: str) -> bool:
    """Whether InnoDB names the database ``name`` as it is (its file names encode others)."""
    return name.isascii() and name.replace("_", "").isalnum()


def signature_column(baseline: Baseline, database: str) -> Optional[Column]:
    """How many of ``database``'s tables InnoDB's statistics know, and the sum of their
    counters; None where they do not show counters, or name the database otherwise."""
    if not baseline.table_stats or not plain_name(database):
        return None
    return (
        "(SELECT CONCAT(COUNT(*), ' ', COALESCE(SUM(AUTOINC), 0)) "
        "FROM information_schema.INNODB_SYS_TABLESTATS WHERE LEFT(NAME, %s) = %s)",
        (len(database) + 1, f"{database}/"),
    )


def listed_column(database: str) -> Column:
    """Every counter of ``database``, as a JSON list of ``[table, counter]``."""
    return (
        "(SELECT JSON_ARRAYAGG(JSON_ARRAY(TABLE_NAME, AUTO_INCREMENT)) "
        "FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND AUTO_INCREMENT IS NOT NULL)",
        (database,),
    )


def parse(value: Any) -> list[Any]:
    """The counters that :func:`listed_column` selected."""
    return json.loads(value) if value else []


def read(query: Query, baseline: Baseline, database: str) -> tuple[list[Any], Optional[str]]:
    """The counters of ``database`` and their signature (None without one), in one query."""
    columns = [listed_column(database)]
    signed = signature_column(baseline, database)
    if signed is not None:
        columns.append(signed)
    row = query(
        "SELECT " + ", ".join(sql for sql, _ in columns),
        tuple(argument for _, arguments in columns for argument in arguments),
    )[0]
    return parse(row[0]), (str(row[1]) if signed is not None else None)
