"""PostgreSQL's part in preparing states: the :class:`PostgreSQLEngine` of the shared pipeline.

Plain code, no pytest.  The pipeline (:mod:`pytest_services._db.prepare`) builds a state
once per server and key; this module says how PostgreSQL does its part: where its cache
entries are, how a private server starts on a copy of the base entry (as the server's
account, in a folder of that account's, when we are root), and how the default database is
created, filled by the loaders, described and copied into the template database.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from logging import Logger
from typing import Any, Optional

from pytest_services._db.cache import CacheEntry
from pytest_services._db.postgresql import cache
from pytest_services._db.postgresql.describe import (
    CONTROL_DATABASE,
    fill_template,
    quote,
    snapshot,
)
from pytest_services._db.postgresql.init import dsn_of, run_loader
from pytest_services._db.postgresql.server import (
    START_TIMEOUT,
    PostgreSQLServer,
)
from pytest_services._db.sparse import copy_tree
from pytest_services._db.state import DatabaseInit, Loader, State
from pytest_services._engine.account import ServiceAccount, chown_tree
from pytest_services._engine.paths import StrPath, socket_path
from pytest_services.process import ServiceProcess, start_service

__all__ = ["PREPARE_PORT", "PostgreSQLEngine", "connect"]

#: The port of the preparing server: only its socket's name, in a folder of its own.
PREPARE_PORT = 5432
#: The name of a WAL segment file.
SEGMENT = re.compile(r"[0-9A-F]{24}")


def connect(socket_dir: str, port: int, database: str) -> Any:
    """An autocommit psycopg connection to ``database`` as the superuser."""
    import psycopg

    return psycopg.connect(dsn_of(socket_dir, port, database), autocommit=True)


def _move(source: str, target: str) -> None:
    try:
        os.rename(source, target)
    except OSError:  # another file system
        copy_tree(source, target)
        shutil.rmtree(source)


@dataclass
class PostgreSQLEngine:
    """A PostgreSQL installation, its cache folder, and who runs it where, as the pipeline
    sees them: ``work_dir`` is a folder that ``account`` (we, when None) may use."""

    server: PostgreSQLServer
    cache: str
    work_dir: str
    account: Optional[ServiceAccount]
    log: Logger
    name: str = "PostgreSQL"
    start_timeout: float = START_TIMEOUT
    _place: str = ""
    _data_dir: str = ""

    @property
    def owner(self) -> Optional[tuple[int, int]]:
        """The account's ids: a session's copy is made its own as it is copied."""
        return (self.account.uid, self.account.gid) if self.account is not None else None

    def base_entry(self) -> CacheEntry:
        return cache.base_entry(self.server, self.cache)

    def base_data_dir(self) -> str:
        return cache.cached_data_dir(self.server, self.cache, self.work_dir, self.account, self.log)

    def start_preparing(
        self, build: str, data_dir: str, run_dir: StrPath, log_dir: StrPath
    ) -> ServiceProcess:
        # The cache is ours alone: the account gets the copy in a folder of its own.
        self._place = tempfile.mkdtemp(prefix="prepare-", dir=self.work_dir)
        self._data_dir = data_dir
        running = data_dir
        if self.account is not None:
            running = os.path.join(self._place, "data")
            _move(data_dir, running)
            os.chown(self._place, self.account.uid, self.account.gid)
        cache.hand_over(self.account, running)
        socket_path(self._place, f".s.PGSQL.{PREPARE_PORT}")  # refuse one too long
        program, arguments, kwargs, checker = self.server.launch(
            running, self._place, PREPARE_PORT, self.account, self._place
        )
        return start_service(
            program,
            arguments,
            kwargs,
            timeout=self.start_timeout,
            checker=checker,
            log_dir=log_dir,
        )

    def create_database(self, database: str) -> None:
        with connect(self._place, PREPARE_PORT, CONTROL_DATABASE) as control:
            control.execute(f"CREATE DATABASE {quote(database)}")

    def run_loader(self, init: DatabaseInit, loader: Loader, database: str) -> None:
        run_loader(self.server, init, loader, self._place, PREPARE_PORT, database)

    def describe(self, database: str) -> State:
        with connect(self._place, PREPARE_PORT, database) as filled:
            state = snapshot(filled, database)
        with connect(self._place, PREPARE_PORT, CONTROL_DATABASE) as control:
            fill_template(control, state)
        return state

    def tidy(self, build: str) -> None:
        running = os.path.join(self._place, "data")
        if self.account is not None:
            _move(running, self._data_dir)
            chown_tree(self._data_dir, os.getuid(), os.getgid())
        for name in ("postmaster.opts", "postmaster.pid"):
            path = os.path.join(self._data_dir, name)
            if os.path.exists(path):
                os.unlink(path)
        drop_spare_wal(self.server, self._data_dir)
        shutil.rmtree(self._place, ignore_errors=True)


def drop_spare_wal(server: PostgreSQLServer, data_dir: str) -> None:
    """Remove the WAL segments a cleanly shut down cluster does not need: those before the
    one where its last checkpoint starts, and those kept for reuse after the next one (the
    record may end there).  Every session copies the state: it copies two segments instead
    of a dozen, and the server makes new segments as it needs them."""
    result = subprocess.run(
        [server.program("pg_controldata"), "-D", data_dir],
        capture_output=True,
        env={**os.environ, "LC_ALL": "C"},
        check=False,
    )
    fields = dict(
        line.split(":", 1) for line in result.stdout.decode(errors="replace").splitlines()
    )
    keep = fields.get("Latest checkpoint's REDO WAL file", "").strip()
    state = fields.get("Database cluster state", "").strip()
    if result.returncode != 0 or state != "shut down" or not SEGMENT.fullmatch(keep):
        return  # keep everything: nothing is lost but the time of copying it
    wal = os.path.join(data_dir, "pg_wal")
    segments = sorted(name for name in os.listdir(wal) if SEGMENT.fullmatch(name))
    if keep not in segments:
        return
    start = segments.index(keep)
    for name in segments[:start] + segments[start + 2 :]:
        os.unlink(os.path.join(wal, name))
