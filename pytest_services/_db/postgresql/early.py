"""A PostgreSQL server started while the session collects its tests, before a fixture asks.

Plain code, no pytest.  A session that will most likely start its server from a state the
cache holds already (the Django glue can tell as soon as Django is configured) calls
:func:`begin` when it starts.  A thread then does what the server fixtures would do later:
it creates a session folder of its own, takes the state's spare copy or copies the entry
(it never builds one), reserves a port and starts ``postgres``, watched like every service,
recording nothing in the bill yet.  The fixtures take the folder (:meth:`~EarlyServer.take_folder`)
and the port (:meth:`~EarlyServer.take_port`) when they come to them, and the server
(:meth:`~EarlyServer.claim`) only if it is the very one they would start: the same folder,
port, state and database, on the socket only.  Otherwise, and in a session that does not
use it, the server is stopped and what is left removed (:func:`finish`).  A wrong guess
costs a start in the background, never a wrong server.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from logging import Logger
from typing import Optional

from pytest_services._db.postgresql.cache import hand_over
from pytest_services._db.postgresql.init import PostgreSQLInit
from pytest_services._db.postgresql.prepare import PostgreSQLEngine
from pytest_services._db.postgresql.server import (
    START_TIMEOUT,
    account,
    get_server,
    postgresql_cache_dir,
    shut_down_now,
)
from pytest_services._db.prepare import cached_state_data_dir, state_entry
from pytest_services._db.state import State
from pytest_services._engine import ledger, sessions
from pytest_services._engine.account import open_to
from pytest_services._engine.paths import KEEP_LOGS, LOGS, private_dir, socket_path
from pytest_services.process import ServiceProcess, start_service

__all__ = ["EarlyServer", "begin", "current", "finish"]


class EarlyServer:
    """The server of the state ``key`` makes in ``database``, started in a thread from a
    session folder in ``parent`` (the memory root) on a port ``get_port()`` reserves."""

    def __init__(
        self,
        parent: str,
        worker: str,
        key: str,
        database: str,
        get_port: Callable[[], int],
        release_port: Callable[[int], None],
        log: Logger,
    ) -> None:
        self.parent, self.worker, self.database = parent, worker, database
        self.init = PostgreSQLInit(key=key)
        self._get_port, self._release_port, self._log = get_port, release_port, log
        self.session: Optional[str] = None
        self.logs_session: Optional[str] = None
        self.base: Optional[str] = None
        self.port: Optional[int] = None
        self.process: Optional[ServiceProcess] = None
        self.state: Optional[State] = None
        self.entry_path = ""
        self.folder_taken = False
        self.claimed = False
        self._records: list[Callable[[], None]] = []
        self._thread = threading.Thread(target=self._run, name="early PostgreSQL", daemon=True)

    def start(self) -> None:
        """Begin in a thread (:func:`begin` does)."""
        self._thread.start()

    def _run(self) -> None:
        try:
            with ledger.deferring() as self._records:
                self._start()
        except Exception as exc:  # the fixtures start the server as usual, and say what failed
            self._log.debug("the early PostgreSQL server did not start: %s", exc)
            self.stop()

    def _start(self) -> None:
        server_account = account()
        sessions.sweep_dead_sessions(self.parent, self._log)
        self.session = sessions.session_dir(self.parent, self.worker)
        if server_account is None:
            self.base = private_dir(os.path.join(self.session, "postgresql"))
        else:
            self.base = open_to(server_account, self.session, "postgresql")
        server = get_server()
        engine = PostgreSQLEngine(
            server, postgresql_cache_dir(self.parent), self.base, server_account, self._log
        )
        self.entry_path = state_entry(engine, self.init, self.database).path
        data_dir = os.path.join(self.base, "data")
        state = cached_state_data_dir(engine, self.init, self.database, data_dir)
        if state is None:
            return  # not in the cache: the fixtures build it
        hand_over(server_account, data_dir)
        self.port = self._get_port()
        host = open_to(server_account, self.base, "run")
        socket_path(host, f".s.PGSQL.{self.port}")  # refuse one too long
        program, arguments, kwargs, checker = server.launch(
            data_dir, host, self.port, server_account, self.base
        )
        self.process = start_service(
            program,
            arguments,
            kwargs,
            timeout=START_TIMEOUT,
            checker=checker,
            log_dir=self._log_dir(),
            grace=0,
        )
        self.state = state

    def _log_dir(self) -> str:
        """A folder on disk for the server's output, kept when a report named it."""
        self.logs_session = sessions.session_dir(tempfile.gettempdir(), self.worker)
        return private_dir(os.path.join(self.logs_session, LOGS))

    def wait(self) -> None:
        """Wait until the thread is done (the server is ready, or not started)."""
        self._thread.join()

    def take_folder(self, parent: str, worker: str) -> Optional[str]:
        """The session folder, for a fixture that would create one in ``parent`` for
        ``worker``: the fixture removes it from now on."""
        self.wait()
        if (
            self.session is None
            or self.folder_taken
            or (parent, worker)
            != (
                self.parent,
                self.worker,
            )
        ):
            return None
        self.folder_taken = True
        return self.session

    def take_port(self) -> Optional[int]:
        """The port the server listens on, or None; it stays reserved until :func:`finish`."""
        self.wait()
        return self.port

    def claim(self, base: str, host: str, port: int, tcp: bool, entry_path: str) -> bool:
        """Whether the server is the one the fixtures would start now: then its records
        go to the bill, and its stop is theirs; otherwise it is stopped, its data removed."""
        self.wait()
        if self.process is None or self.process.poll() is not None or self.base is None:
            self.stop()
            return False
        same = (base, host, port, tcp, entry_path) == (
            self.base,
            os.path.join(self.base, "run"),
            self.port,
            False,
            self.entry_path,
        )
        if not same:
            self.stop()
            return False
        self.claimed = True
        records, self._records = self._records, []
        for record in records:
            record()
        return True

    def stop(self) -> None:
        """Stop the server if it runs, and remove its data directory; what it recorded
        (a spare copy to make once it started, too) is forgotten."""
        self._records = []
        process, self.process = self.process, None
        if self.base is not None:
            data_dir = os.path.join(self.base, "data")
            if process is not None:
                shut_down_now(process, data_dir)
                process.stop()
            shutil.rmtree(data_dir, ignore_errors=True)

    def finish(self) -> None:
        """At the end of the session: stop an unclaimed server, release the port, and remove
        the folder unless a fixture took it."""
        self.wait()
        if not self.claimed:
            self.stop()
        if self.port is not None:
            self._release_port(self.port)
        if self.session is not None and not self.folder_taken:
            sessions.release_session_dir(self.session)
            shutil.rmtree(self.session, ignore_errors=True)
        if self.logs_session is not None:
            sessions.release_session_dir(self.logs_session)
            logs = os.path.join(self.logs_session, LOGS)
            if not os.path.exists(os.path.join(logs, KEEP_LOGS)):
                shutil.rmtree(self.logs_session, ignore_errors=True)
            else:
                self._log.warning("kept the logs of services that failed or died in %s", logs)


_current: list[EarlyServer] = []


def begin(server: EarlyServer) -> None:
    """Start ``server`` in the background, in place of any started before."""
    finish()
    _current.append(server)
    server.start()


def current() -> Optional[EarlyServer]:
    """The server started early, while the fixtures have not claimed it."""
    return _current[0] if _current and not _current[0].claimed else None


def finish() -> None:
    """Stop the early server unless the fixtures use it, and remove what they did not take."""
    while _current:
        _current.pop().finish()
