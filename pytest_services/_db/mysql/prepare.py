"""MySQL's part in preparing states: the :class:`MySQLEngine` of the shared pipeline.

Plain code, no pytest.  The pipeline (:mod:`pytest_services._db.prepare`) builds a state
once per server and key; this module says how a MySQL/MariaDB server does its part: where
its cache entries are, how a private server starts on a copy of the base entry (its own
``my.cnf``, no binary log), and how the default database is created, filled by the loaders,
described and copied into the template database.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from logging import Logger
from typing import Any, Optional

from pytest_services._db.cache import CacheEntry
from pytest_services._db.mysql import driver
from pytest_services._db.mysql.cache import base_entry, cached_data_dir
from pytest_services._db.mysql.describe import fill_template, quote, snapshot
from pytest_services._db.mysql.init import MySQLInit, run_loader
from pytest_services._db.mysql.server import START_TIMEOUT, MySQLServer, defaults_file_text
from pytest_services._db.state import DatabaseInit, Loader, State
from pytest_services._engine.paths import StrPath, socket_path
from pytest_services.process import ServiceProcess, start_service

__all__ = ["MySQLEngine"]


def _connect(socket: str, database: str = "") -> Any:
    return driver.connect(socket, database, autocommit=True)


@dataclass
class MySQLEngine:
    """A MySQL/MariaDB server binary and its cache folder, as the pipeline sees them."""

    server: MySQLServer
    cache: str
    log: Logger
    name: str = "MySQL"
    start_timeout: float = START_TIMEOUT
    owner: Optional[tuple[int, int]] = None  # the server runs as we do
    _socket: str = ""

    @property
    def service(self) -> str:
        """The server's binary name, under which the session's bill counts its states."""
        return os.path.basename(self.server.binary)

    def base_entry(self) -> CacheEntry:
        return base_entry(self.server, self.cache)

    def base_data_dir(self) -> str:
        return cached_data_dir(self.server, self.cache, self.log)

    def start_preparing(
        self, build: str, data_dir: str, run_dir: StrPath, log_dir: StrPath
    ) -> ServiceProcess:
        self._socket = socket = socket_path(run_dir, "mysql-prepare.sock")
        defaults = os.path.join(build, "my.cnf")
        tmp_dir = os.path.join(build, "tmp")
        os.mkdir(tmp_dir)
        with open(defaults, "w", encoding="utf-8") as cnf:
            pid_file = os.path.join(build, "mysql.pid")
            cnf.write(
                defaults_file_text(self.server, data_dir, socket, pid_file, tmp_dir, binlog=False)
            )
        arguments = [f"--defaults-file={defaults}"]
        if os.geteuid() == 0:
            arguments.append("--user=root")

        def accepts() -> bool:
            try:
                _connect(socket).close()
            except driver.error():
                return False
            return True

        return start_service(
            self.server.binary,
            arguments,
            timeout=self.start_timeout,
            checker=accepts,
            log_dir=log_dir,
        )

    def create_database(self, database: str) -> None:
        connection = _connect(self._socket)
        try:
            connection.cursor().execute(f"CREATE DATABASE {quote(database)}")
        finally:
            connection.close()

    def run_loader(self, init: DatabaseInit, loader: Loader, database: str) -> None:
        assert isinstance(init, MySQLInit)
        run_loader(self.server, init, loader, self._socket, database)

    def describe(self, database: str) -> State:
        connection = _connect(self._socket, database)
        try:
            state = snapshot(connection.cursor(), database)
            fill_template(connection.cursor(), state)
        finally:
            connection.close()
        return state

    def tidy(self, build: str) -> None:
        shutil.rmtree(os.path.join(build, "tmp"))
        for name in ("my.cnf", "mysql.pid"):
            if os.path.exists(os.path.join(build, name)):
                os.unlink(os.path.join(build, name))
