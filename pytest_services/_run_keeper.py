"""The keeper of one pytest-xdist run: it owns the services that all workers of the run share.

A :class:`RunKeeper` lives in the process that outlives every worker, the pytest-xdist
controller.  It listens on an abstract unix socket named after a random run id, answers only
processes of the same user, and keeps for the whole run:

* which worker starts each shared service, and the outcome it publishes (a JSON value or an
  error), handed to every worker that asks;
* the process groups of those services, which it watches through this process's watchdog
  (:mod:`pytest_services._engine.reaper`), so they survive the worker that started them and die with
  the controller, however it ends;
* the ports reserved for them, and the folders their logs are in.

:meth:`RunKeeper.close` stops all of that at the end of the run.  Workers talk to it through
a :class:`KeeperClient`, one JSON line per request and per answer.  Nothing here needs
pytest.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import struct
import threading
import time
import uuid
from typing import Any

from pytest_services._engine import reaper as _reaper
from pytest_services._engine.groups import stop_groups
from pytest_services._engine.paths import KEEP_LOGS, LOGS
from pytest_services._reserve.ports import get_free_port, unlock_port
from pytest_services.exceptions import KeeperError

#: Seconds between SIGTERM and SIGKILL when the run's services are stopped.
DEFAULT_GRACE = 5.0
#: Seconds a request other than waiting for a service may take.
REQUEST_TIMEOUT = 60.0
#: Seconds a waiting worker gives a starter past its timeout to stop and say why it gave up.
GIVE_UP_MARGIN = 30.0

Outcome = dict[str, Any]


def keeper_address(run_id: str) -> str:
    """The abstract unix socket of the keeper of run ``run_id`` (no file, nothing to clean)."""
    return f"\0pytest-services-run-{run_id}"


def _peer(sock: socket.socket) -> tuple[int, int]:
    """The pid and uid of the process at the other end of a unix socket."""
    size = struct.calcsize("3i")
    pid, uid, _gid = struct.unpack(
        "3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, size)
    )
    return pid, uid


class _Service:
    """One shared service: who starts it, and its outcome once published."""

    def __init__(self, starter: str, deadline: float) -> None:
        self.starter = starter
        #: When (``time.monotonic()``) the starter gives up on its start function.
        self.deadline = deadline
        self.outcome: Outcome | None = None


class _Peer:
    """One connected worker, and the services it was asked to start and has not finished."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.label = f"pid {pid}"
        self.starting: set[str] = set()


class RunKeeper:
    """Owns the shared services of one run; create it in the process that outlives the workers."""

    def __init__(
        self,
        run_id: str | None = None,
        *,
        log: logging.Logger | None = None,
        grace: float = DEFAULT_GRACE,
    ) -> None:
        self.run_id = run_id or uuid.uuid4().hex
        self.pid = os.getpid()
        self._log = log or logging.getLogger("pytest_services")
        self._grace = grace
        self._cond = threading.Condition()
        self._services: dict[str, _Service] = {}
        self._groups: list[int] = []
        #: The tag of each group (``PYTEST_SERVICES_TAG``), which marks what left it too.
        self._tags: dict[int, str] = {}
        self._ports: list[tuple[int, str]] = []
        self._folders: list[str] = []
        self._closed = False
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(keeper_address(self.run_id))
        self._server.listen(64)
        threading.Thread(target=self._accept, name="pytest-services-keeper", daemon=True).start()

    def close(self) -> None:
        """Stop accepting, stop every shared service, release their ports, remove their folders."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            groups, ports, folders = list(self._groups), list(self._ports), list(self._folders)
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self._server.close()
        stop_groups(groups, self._grace, self._tags)
        for pgid in groups:
            _reaper.forget(pgid)
        for port, lock_dir in ports:
            unlock_port(port, lock_dir, self._log)
        for folder in folders:
            _remove_keeping_logs(folder)
            _reaper.forget_folder(folder)
        if groups:
            self._log.debug("stopped the shared services of run %s", self.run_id)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return  # closed
            try:
                pid, uid = _peer(conn)
            except OSError:
                uid = -1  # gone already
            if uid != os.getuid():
                conn.close()  # or another user's process: it has no business here
                continue
            threading.Thread(target=self._serve, args=(conn, _Peer(pid)), daemon=True).start()

    def _serve(self, conn: socket.socket, peer: _Peer) -> None:
        try:
            with conn, conn.makefile("rwb") as stream:
                for line in stream:
                    reply = self._handle(json.loads(line), peer)
                    stream.write(json.dumps(reply).encode() + b"\n")
                    stream.flush()
        except (OSError, ValueError):
            pass
        finally:
            # A worker that goes away while it runs a start function has crashed.
            for name in list(peer.starting):
                self._publish(
                    peer,
                    name,
                    {
                        "error": f"Shared service {name!r} failed to start: worker {peer.label} "
                        "died while running its start function; see that worker's crash "
                        "report."
                    },
                )

    def _handle(self, request: dict[str, Any], peer: _Peer) -> Outcome:
        op = request.get("op")
        try:
            if op == "hello":
                peer.label = f"{request['worker']} (pid {peer.pid})"
                return {"run": self.run_id}
            if op == "claim":
                return self._claim(peer, request["name"], float(request["timeout"]))
            if op == "port":
                lock_dir = str(request["lock_dir"])
                port = get_free_port(lock_dir, self._log)
                with self._cond:
                    self._ports.append((port, lock_dir))
                return {"port": port}
            if op == "finish":
                self._finish(peer, request)
                return {"ok": True}
        except Exception as exc:  # an answer is better than a worker waiting for one
            return {"error": f"{type(exc).__name__}: {exc}"}
        return {"error": f"unknown request {op!r}"}

    def _claim(self, peer: _Peer, name: str, timeout: float) -> Outcome:
        with self._cond:
            service = self._services.get(name)
            if service is None:
                self._services[name] = _Service(peer.label, time.monotonic() + timeout)
                peer.starting.add(name)
                return {"start": True}

            def done() -> bool:
                return service.outcome is not None or self._closed

            self._cond.wait_for(done, timeout)
            if not done() and service.deadline <= time.monotonic():
                # The starter has given up by now, and is saying why: wait for that.
                self._cond.wait_for(done, GIVE_UP_MARGIN)
            if service.outcome is not None:
                return service.outcome
            return {"waiting": service.starter}

    def _finish(self, peer: _Peer, request: dict[str, Any]) -> None:
        name = str(request["name"])
        if name not in peer.starting:
            raise KeeperError(f"this worker was not asked to start {name!r}")
        groups = [int(pgid) for pgid in request.get("pgids", ())]
        tags = {int(pgid): str(tag) for pgid, tag in dict(request.get("tags") or {}).items()}
        for pgid in groups:
            _reaper.watch(pgid, tags.get(pgid))  # before the worker forgets them
        folder = request.get("folder")
        if folder:
            _reaper.watch_folder(str(folder))
        with self._cond:
            self._groups.extend(groups)
            self._tags.update(tags)
            if folder:
                self._folders.append(str(folder))
        self._publish(peer, name, dict(request["outcome"]))

    def _publish(self, peer: _Peer, name: str, outcome: Outcome) -> None:
        with self._cond:
            peer.starting.discard(name)
            self._services[name].outcome = outcome
            self._cond.notify_all()


def _remove_keeping_logs(folder: str) -> None:
    """Remove a shared service's folder; only its logs stay if a worker named one there."""
    logs = os.path.join(folder, LOGS)
    if not os.path.exists(os.path.join(logs, KEEP_LOGS)):
        shutil.rmtree(folder, ignore_errors=True)
        return
    for entry in os.listdir(folder):
        if entry != LOGS:
            path = os.path.join(folder, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(path)


class KeeperClient:
    """A worker's connection to the keeper of its run."""

    def __init__(self, run_id: str, keeper_pid: int, worker: str) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(keeper_address(run_id))
            pid, uid = _peer(self._sock)
        except OSError as exc:
            self._sock.close()
            raise KeeperError(
                f"Cannot reach the keeper of pytest-xdist run {run_id} (in process {keeper_pid}): "
                f"{exc}. Is this worker on another host than the controller?"
            ) from exc
        if (pid, uid) != (keeper_pid, os.getuid()):
            self._sock.close()
            raise KeeperError(
                f"The socket of run {run_id} belongs to process {pid} of uid {uid}, not to the "
                f"pytest-xdist controller (process {keeper_pid}); refusing to use it."
            )
        self._stream = self._sock.makefile("rwb")
        self._lock = threading.Lock()
        self.request({"op": "hello", "worker": worker})

    def request(self, message: dict[str, Any], timeout: float = REQUEST_TIMEOUT) -> Outcome:
        """Send one request and return the answer."""
        with self._lock:
            self._sock.settimeout(timeout)
            try:
                self._stream.write(json.dumps(message).encode() + b"\n")
                self._stream.flush()
                line = self._stream.readline()
            except OSError as exc:
                raise KeeperError(f"The keeper of the run did not answer: {exc}.") from exc
        if not line:
            raise KeeperError(
                "The keeper of the run closed the connection: the pytest-xdist controller is "
                "ending or gone."
            )
        answer: Outcome = json.loads(line)
        return answer

    def claim(self, name: str, timeout: float) -> Outcome:
        """``{"start": True}`` if this worker must start ``name``, else the published outcome.

        The outcome is ``{"waiting": starter}`` when the starter did not finish within
        ``timeout`` seconds.
        """
        message = {"op": "claim", "name": name, "timeout": timeout}
        return self.request(message, timeout + REQUEST_TIMEOUT)

    def port(self, lock_dir: str) -> int:
        """A free port that the keeper reserves in ``lock_dir`` until the end of the run."""
        answer = self.request({"op": "port", "lock_dir": lock_dir})
        if "error" in answer:
            raise KeeperError(f"The keeper of the run could not reserve a port: {answer['error']}")
        return int(answer["port"])

    def finish(
        self,
        name: str,
        outcome: Outcome,
        pgids: list[int],
        folder: str | None = None,
        tags: dict[int, str] | None = None,
    ) -> None:
        """Publish the outcome of ``name``; hand its process groups (with the ``tags`` of
        what they spawn) and ``folder`` to the run."""
        message = {"op": "finish", "name": name, "outcome": outcome, "pgids": pgids}
        answer = self.request({**message, "folder": folder, "tags": tags or {}})
        if "error" in answer:
            raise KeeperError(f"The keeper of the run refused {name!r}: {answer['error']}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._stream.close()
        self._sock.close()
