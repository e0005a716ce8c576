"""What the per-test reset keeps in check beside the default database: other connections,
prepared XA transactions, global variables, accounts and events of the whole server.

Plain code, no pytest.  :class:`Baseline` is what the server looked like at the first reset
of the session; the reset compares with it and puts back what it can.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pytest_services._db.mysql.describe import quote
from pytest_services.exceptions import MySQLError

__all__ = [
    "GLOBALS",
    "Baseline",
    "account",
    "end_connections",
    "put_back_accounts",
    "rollback_prepared_xa",
]

Query = Callable[..., list[tuple[Any, ...]]]

#: Global variables that tests of an application change, and the reset puts back.  Those
#: the server does not have are left out.
GLOBALS = (
    "binlog_format",
    "binlog_row_image",
    "sql_mode",
    "time_zone",
    "event_scheduler",
    "autocommit",
    "foreign_key_checks",
    "transaction_isolation",
    "character_set_server",
    "collation_server",
    "character_set_client",
    "default_storage_engine",
    "explicit_defaults_for_timestamp",
    "div_precision_increment",
    "auto_increment_increment",
    "auto_increment_offset",
    "read_only",
    "max_connections",
    "wait_timeout",
    "lock_wait_timeout",
    "innodb_lock_wait_timeout",
    "max_allowed_packet",
    "group_concat_max_len",
    "max_statement_time",
    "sql_auto_is_null",
    "old_mode",
    "lc_time_names",
    "log_bin_trust_function_creators",
)
#: Seconds a reset waits for the connections it ended to be gone.
END_TIMEOUT = 60.0


def account(user: str, host: str) -> str:
    """``user@host`` as SQL."""
    return f"{quote(user)}@{quote(host)}"


@dataclass
class Baseline:
    """The server outside the default database, as the first reset of the session saw it."""

    databases: set[str]
    globals: dict[str, Any]
    accounts: dict[tuple[str, str, bool], list[str]]
    events: set[tuple[str, str]]
    lock_info: bool
    watched: list[str] = field(default_factory=list)
    #: Whether InnoDB's table statistics show auto-increment counters (MariaDB's do).
    table_stats: bool = False

    @classmethod
    def read(cls, query: Query, database: str) -> Baseline:
        names = [str(row[0]).lower() for row in query("SHOW GLOBAL VARIABLES")]
        watched = [name for name in GLOBALS if name in names]
        values = query("SELECT " + ", ".join(f"@@global.{name}" for name in watched))[0]
        found = dict(zip(watched, values))
        found["binlog_format"] = "ROW"  # what the reset reads
        plugin = query(
            "SELECT 1 FROM information_schema.PLUGINS "
            "WHERE PLUGIN_NAME = 'METADATA_LOCK_INFO' AND PLUGIN_STATUS = 'ACTIVE'"
        )
        stats = query(
            "SELECT 1 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'information_schema' "
            "AND TABLE_NAME = 'INNODB_SYS_TABLESTATS' AND COLUMN_NAME = 'AUTOINC'"
        )
        return cls(
            databases={str(name) for (name,) in query("SHOW DATABASES")},
            globals=found,
            accounts=read_accounts(query),
            events=other_events(query, database),
            lock_info=bool(plugin),
            watched=watched,
            table_stats=bool(stats),
        )

    def changed_globals(self, values: Iterable[Any]) -> dict[str, Any]:
        """The watched globals whose ``values`` (in :attr:`watched` order) differ."""
        return {
            name: self.globals[name]
            for name, value in zip(self.watched, values)
            if value != self.globals[name]
        }


def put_back_globals(query: Query, changed: dict[str, Any]) -> None:
    """``SET GLOBAL`` each of ``changed`` to its value."""
    for name, value in changed.items():
        try:
            query(f"SET GLOBAL {name} = %s", (value,))
        except Exception as exc:
            raise MySQLError(
                f"mysql_clean cannot put back the global variable {name} = {value!r}: {exc}"
            ) from exc


def read_accounts(query: Query) -> dict[tuple[str, str, bool], list[str]]:
    """Every user and role of the server, with its grants."""
    try:
        rows = query("SELECT User, Host, IS_ROLE = 'Y' FROM mysql.user")
    except Exception:  # MySQL: no IS_ROLE column
        rows = [(user, host, False) for user, host in query("SELECT User, Host FROM mysql.user")]
    found = {}
    for user, host, role in rows:
        name = quote(str(user)) if role else account(str(user), str(host))
        try:
            grants = sorted(str(row[0]) for row in query(f"SHOW GRANTS FOR {name}"))
        except Exception as exc:
            if (exc.args[0] if exc.args else None) != 1141:  # no grant at all
                raise
            grants = []
        found[(str(user), str(host), bool(role))] = grants
    return found


def put_back_accounts(query: Query, baseline: Baseline, who: str) -> list[str]:
    """Drop the users and roles made since the first reset; name the accounts of the
    baseline whose grants changed (``who`` changed them), and take them as they are now."""
    before, problems = baseline.accounts, []
    for user, host, role in sorted(set(read_accounts(query)) - set(before)):
        query(f"DROP ROLE {quote(user)}" if role else f"DROP USER {account(user, host)}")
    now = read_accounts(query)  # dropping a role takes back its grants
    for key, grants in sorted(before.items()):
        if now.get(key) != grants:
            what = "grants" if key in now else "account"
            problems.append(
                f"mysql_clean cannot put back the {what} of {account(*key[:2])}, changed by "
                f"{who}: create users of your own for tests (mysql_clean drops them) instead "
                "of changing the server's."
            )
    baseline.accounts = {key: now[key] for key in before if key in now}
    return problems


def other_events(query: Query, database: str) -> set[tuple[str, str]]:
    """The events of the server outside ``database``."""
    return {
        (str(schema), str(name))
        for schema, name in query(
            "SELECT EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS "
            "WHERE EVENT_SCHEMA <> %s",
            (database,),
        )
    }


def end_connections(query: Query, lock_info: bool) -> list[int]:
    """End the other connections that are in a transaction, hold a lock or wait for one,
    those that wait first (so that none gets the lock it waits for), and wait until they
    are gone.  Return their ids."""
    holders = "ID IN (SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX)"
    if lock_info:
        holders += " OR ID IN (SELECT THREAD_ID FROM information_schema.METADATA_LOCK_INFO)"
    sql = (
        "SELECT ID, STATE LIKE 'Waiting for%' OR STATE = 'User lock' "
        "FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() "
        "AND COMMAND NOT IN ('Daemon', 'Binlog Dump') "
        "AND USER NOT IN ('system user', 'event_scheduler') "
        f"AND ({holders} OR STATE LIKE 'Waiting for%lock%' OR STATE = 'User lock')"
    )
    ended: list[int] = []
    for _ in range(10):
        found = query(sql)
        if not found:
            break
        threads = [int(thread) for thread, waits in sorted(found, key=lambda row: not row[1])]
        for thread in threads:
            try:
                query(f"KILL {thread}")
            except Exception as exc:  # it ended by itself meanwhile
                if (exc.args[0] if exc.args else None) != 1094:  # unknown thread id
                    raise
        ended += threads
        _wait_gone(query, threads)
    return ended


def _wait_gone(query: Query, threads: list[int]) -> None:
    ids = ", ".join(str(thread) for thread in threads)
    deadline = time.monotonic() + END_TIMEOUT
    while query(f"SELECT ID FROM information_schema.PROCESSLIST WHERE ID IN ({ids})"):
        if time.monotonic() > deadline:
            raise MySQLError(
                f"mysql_clean ended the connections {ids}, left by the previous test, "
                f"and they are still there after {END_TIMEOUT:.0f} s."
            )
        time.sleep(0.002)


def rollback_prepared_xa(query: Query) -> int:
    """Roll back the prepared XA transactions that no connection owns any more."""
    rows = query("XA RECOVER")
    for format_id, gtrid_length, bqual_length, data in rows:
        data = data if isinstance(data, bytes) else str(data).encode()
        gtrid, bqual = data[: int(gtrid_length)], data[int(gtrid_length) :][: int(bqual_length)]
        query(f"XA ROLLBACK X'{gtrid.hex()}',X'{bqual.hex()}',{int(format_id)}")
    return len(rows)
