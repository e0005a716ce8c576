"""MySQL's prepared states: :class:`MySQLInit`, and how its loaders reach the server.

Plain code, no pytest.  What a state is, its key and its loaders are the same for every
database (:mod:`pytest_services._db.state`); what is MySQL's own is that SQL files run
through the ``mariadb``/``mysql`` client (so comments, several statements and procedures
without ``DELIMITER`` work as they do there) and that callables get ``socket`` and
``database`` keyword arguments.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pytest_services._db.mysql.server import (
    MySQLServer,
    _require_tool,
)
from pytest_services._db.state import DatabaseInit, Loader, statement_at
from pytest_services.exceptions import DatabaseInitError, MySQLInitError

_AT_LINE = re.compile(r"^ERROR \d+ \(\w+\) at line (\d+)", re.MULTILINE)


@dataclass(frozen=True)
class MySQLInit(DatabaseInit):
    """How to fill the default database once: ``load`` runs in order, ``key`` names the result.

    SQL files run through the ``mariadb``/``mysql`` client; callables get the keyword
    arguments ``socket`` and ``database``.  With ``key=None`` the key is a digest of the SQL
    files' contents and of each callable's module, name and source; pass your own (e.g.
    :func:`hash_files` of a migrations folder) when the callables depend on more than their
    own source.
    """

    engine: ClassVar[str] = "MySQL"
    error: ClassVar[type[DatabaseInitError]] = MySQLInitError


def run_loader(
    server: MySQLServer, init: MySQLInit, loader: Loader, socket: str, database: str
) -> None:
    """Run one loader against the server on ``socket``; raise :class:`MySQLInitError`."""
    init.run(
        loader,
        lambda path: _run_sql_file(server, init, path, socket, database),
        socket=socket,
        database=database,
    )


def _run_sql_file(
    server: MySQLServer, init: MySQLInit, path: Path, socket: str, database: str
) -> None:
    client = _require_tool(server, ("mariadb", "mysql"))
    command = [client, "--no-defaults", f"--socket={socket}", "--user=root", database]
    try:
        with open(path, "rb") as sql:
            result = subprocess.run(command, stdin=sql, capture_output=True, check=False)
    except OSError as exc:
        raise MySQLInitError(f"Cannot run the SQL file {path}: {exc}") from exc
    if result.returncode == 0:
        return
    output = result.stderr.decode(errors="replace").strip()
    match = _AT_LINE.search(output)
    # The client echoes the statement between dashed lines; the ERROR line says it all.
    error = next((line for line in output.splitlines() if line.startswith("ERROR")), output)
    if match is None:
        raise init.sql_file_error(path, error)
    line = int(match.group(1))
    raise init.sql_file_error(path, error, line, statement_at(path, line))
