"""The other connections to a PostgreSQL server's databases, as the reset sees and ends them.

Plain code, no pytest.  Each function runs its queries on ``control``, a connection of the
reset's own to another database of the server.
"""

from __future__ import annotations

import time
from typing import Any

from pytest_services.exceptions import PostgreSQLError

__all__ = ["busy_and_position", "connections_to", "end_connections"]

#: The other connections to the default database that are in a transaction (or running a
#: statement), and where the log ends.
_BUSY = """
SELECT array(SELECT pid FROM pg_stat_activity
             WHERE datname = %s AND pid <> pg_backend_pid()
               AND backend_type = 'client backend' AND state <> 'idle'),
       pg_current_wal_insert_lsn()::text
"""
#: The connections to the databases named.
_CONNECTED = """
SELECT array(SELECT pid FROM pg_stat_activity
             WHERE datname = ANY(%s) AND pid <> pg_backend_pid())
"""
_TERMINATE = "SELECT count(pg_terminate_backend(pid)) FROM unnest(%s::int[]) AS ended (pid)"
_GONE = "SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = ANY(%s::int[]))"


def busy_and_position(control: Any, database: str) -> tuple[list[int], str]:
    """The other connections to ``database`` in a transaction (or running a statement), and
    where the log ends, in one round trip."""
    busy, position = control.execute(_BUSY, (database,)).fetchone()
    return busy, position


def connections_to(control: Any, databases: list[str]) -> list[int]:
    """The other connections to ``databases``."""
    (pids,) = control.execute(_CONNECTED, (databases,)).fetchone()
    return list(pids)


def end_connections(control: Any, pids: list[int], wait_ms: int) -> None:
    """End the connections of ``pids``, and wait until they are gone: the server's own
    wait (``pg_terminate_backend(pid, timeout)``) looks every 100 ms."""
    control.execute(_TERMINATE, (pids,))
    deadline = time.monotonic() + wait_ms / 1000
    while not control.execute(_GONE, (pids,)).fetchone()[0]:
        if time.monotonic() > deadline:
            raise PostgreSQLError(
                f"The connections {pids} to the test databases did not end within "
                f"{wait_ms} ms of pg_terminate_backend; see the server's log."
            )
        time.sleep(0.0005)
