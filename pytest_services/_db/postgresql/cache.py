"""Initialised PostgreSQL clusters in the cache (``initdb`` once per installation).

Plain code, no pytest.  The entry protocol is :mod:`pytest_services._db.cache`'s; what is
PostgreSQL's own here is the key (the server binary and its settings, the locale) and the
build: ``initdb`` with trust authentication for the superuser ``postgres``, run as the
server's account in a folder of that account's when we are root, then copied into the cache
(whose files stay ours: each session's copy is handed to the account).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from logging import Logger
from typing import Any, Optional

from pytest_services._db.build import ensure
from pytest_services._db.cache import CacheEntry
from pytest_services._db.postgresql.server import PostgreSQLServer
from pytest_services._db.sparse import copy_tree
from pytest_services._engine.account import ServiceAccount, chown_tree
from pytest_services.exceptions import CalledProcessWithOutputError, PostgreSQLError
from pytest_services.process import check_output

__all__ = ["base_entry", "cached_data_dir", "hand_over", "initialise"]

#: Bump to invalidate every cache entry made by an older layout of this module.
CACHE_FORMAT = 1
#: The superuser every server has, with trust authentication.
SUPERUSER = "postgres"
#: Text of the data directory's own configuration file: every setting is on the command line.
CONF_TEXT = "# Written by pytest-services: the settings are given on the command line.\n"


def _locale() -> str:
    """A UTF-8 locale whose character classes know all of Unicode, where it is installed."""
    return "C.UTF-8" if os.path.isdir("/usr/lib/locale/C.utf8") else "C"


def base_entry(server: PostgreSQLServer, pg_cache: str) -> CacheEntry:
    """The cache entry of ``server``'s initialised cluster, built or not."""
    key = f"pg{server.major}-{server.identity}-{CACHE_FORMAT}-{_locale().replace('.', '')}"
    return CacheEntry.in_folder(pg_cache, key)


def initialise(
    server: PostgreSQLServer, data_dir: str, work_dir: str, account: Optional[ServiceAccount]
) -> None:
    """``initdb`` into ``data_dir``; as ``account`` (in a folder of its own in ``work_dir``)
    when one is given."""
    target = data_dir
    if account is not None:
        scratch = tempfile.mkdtemp(prefix="initdb-", dir=work_dir)
        os.chown(scratch, account.uid, account.gid)
        target = os.path.join(scratch, "data")
    command = [
        server.program("initdb"),
        f"--pgdata={target}",
        f"--username={SUPERUSER}",
        "--auth=trust",
        "--encoding=UTF8",
        f"--locale={_locale()}",
        "--no-sync",
        "--no-instructions",
        "--wal-segsize=1",
    ]
    options: dict[str, Any] = {"stdin": subprocess.DEVNULL, "cwd": os.path.dirname(target)}
    if account is not None:
        options.update(account.popen_kwargs(os.path.dirname(target)))
    try:
        try:
            check_output(command, **options)
        except OSError as exc:
            failure = f"Cannot run {command[0]}: {exc}"
        except CalledProcessWithOutputError as exc:
            failure = f"Initialising a PostgreSQL cluster failed: {exc}"
        else:
            failure = ""
        if failure:
            raise PostgreSQLError(failure)
        if target != data_dir:
            copy_tree(target, data_dir)
    finally:
        if target != data_dir:
            shutil.rmtree(os.path.dirname(target), ignore_errors=True)
    with open(os.path.join(data_dir, "postgresql.conf"), "w", encoding="utf-8") as conf:
        conf.write(CONF_TEXT)


def cached_data_dir(
    server: PostgreSQLServer,
    pg_cache: str,
    work_dir: str,
    account: Optional[ServiceAccount],
    log: Logger,
) -> str:
    """An initialised cluster of ``server`` to copy from; built on first use."""
    entry = base_entry(server, pg_cache)

    def build(folder: str) -> dict[str, Any]:
        initialise(server, os.path.join(folder, "data"), work_dir, account)
        return {"version": server.version_text()}

    ensure(entry, build, log, "initialising a PostgreSQL cluster")
    return entry.data_dir


def hand_over(account: Optional[ServiceAccount], data_dir: str) -> None:
    """Give a copy of a data directory to ``account``: the server insists that its data
    directory is its own and closed to everyone else.  A copy is made ours, and given away
    whole (its folder first, and an error on the way leaves it unused): one whose folder is
    the account's already was made the account's as it was copied."""
    if account is not None and os.lstat(data_dir).st_uid != account.uid:
        chown_tree(data_dir, account.uid, account.gid)
    os.chmod(data_dir, 0o700)
