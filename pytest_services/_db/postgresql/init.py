"""PostgreSQL's prepared states: :class:`PostgreSQLInit`, and how its loaders reach the server.

Plain code, no pytest.  What a state is, its key and its loaders are the same for every
database (:mod:`pytest_services._db.state`); what is PostgreSQL's own is that SQL files run
through ``psql`` with ``ON_ERROR_STOP`` (so comments, several statements, ``DO`` blocks and
psql's own commands work as they do there) and that callables get the keyword arguments
``dsn`` (a libpq connection string) and ``database``.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pytest_services._db.postgresql.server import PostgreSQLServer
from pytest_services._db.state import DatabaseInit, Loader, statement_ending_at
from pytest_services.exceptions import DatabaseInitError, PostgreSQLInitError

__all__ = ["PostgreSQLInit", "dsn_of", "run_loader"]

#: How psql names the failing statement: ``psql:FILE:LINE: ERROR:  message``.
_AT_LINE = re.compile(r"^psql:.*:(\d+): (?:ERROR|FATAL):\s+(.*)$", re.MULTILINE)


@dataclass(frozen=True)
class PostgreSQLInit(DatabaseInit):
    """How to fill the default database once: ``load`` runs in order, ``key`` names the result.

    SQL files run through ``psql`` (stopping at the first error); callables get the keyword
    arguments ``dsn`` (a libpq connection string of the database) and ``database``.  With
    ``key=None`` the key is a digest of the SQL files' contents and of each callable's
    module, name and source; pass your own (e.g. :func:`hash_files` of a migrations folder)
    when the callables depend on more than their own source.
    """

    engine: ClassVar[str] = "PostgreSQL"
    error: ClassVar[type[DatabaseInitError]] = PostgreSQLInitError


def dsn_of(socket_dir: str, port: int, database: str) -> str:
    """The libpq connection string of ``database`` on the server at ``socket_dir``."""
    values = {"host": socket_dir, "port": str(port), "user": "postgres", "dbname": database}
    return " ".join(f"{key}={_conninfo_value(value)}" for key, value in values.items())


def _conninfo_value(value: str) -> str:
    if value and not any(char in value for char in " '\\"):
        return value
    return "'{}'".format(value.replace("\\", "\\\\").replace("'", "\\'"))


def run_loader(
    server: PostgreSQLServer,
    init: DatabaseInit,
    loader: Loader,
    socket_dir: str,
    port: int,
    database: str,
) -> None:
    """Run one loader against ``database``; raise :class:`PostgreSQLInitError`."""
    init.run(
        loader,
        lambda path: _run_sql_file(server, init, path, socket_dir, port, database),
        dsn=dsn_of(socket_dir, port, database),
        database=database,
    )


def _run_sql_file(
    server: PostgreSQLServer,
    init: DatabaseInit,
    path: Path,
    socket_dir: str,
    port: int,
    database: str,
) -> None:
    command = [
        server.program("psql"),
        "--no-psqlrc",
        "--quiet",
        "--set=ON_ERROR_STOP=1",
        f"--host={socket_dir}",
        f"--port={port}",
        "--username=postgres",
        f"--dbname={database}",
        f"--file={path}",
    ]
    try:
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    except OSError as exc:
        raise init.error(f"Cannot run the SQL file {path}: {exc}") from exc
    if result.returncode == 0:
        return
    output = result.stderr.decode(errors="replace").strip()
    match = _AT_LINE.search(output)
    if match is None:
        raise init.sql_file_error(path, output)
    line = int(match.group(1))
    raise init.sql_file_error(
        path, f"ERROR: {match.group(2)}", line, statement_ending_at(path, line)
    )
