"""Handing a started service over to its keeper: its ports, its processes, its lifetime.

Ports of a kept service are reserved through a lock table opened for that service alone
(:class:`KeptPorts`): the locks belong to that open file, so passing the descriptor to the
keeper passes the reservations, with no moment at which another session could take one.
The processes are passed as pidfds, which the keeper holds instead of trusting pids.  Only
when the keeper answers that it holds everything does the run's watchdog forget the
service's groups: a run killed at any moment before leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from pytest_services._engine.paths import StrPath
from pytest_services._reserve import registry as _registry
from pytest_services._reserve.lockfiles import LockTable, open_table
from pytest_services._reserve.ports import PortRange, candidate_ports, port_binds
from pytest_services.exceptions import KeeperError, LockError
from pytest_services.process import ServiceProcess

#: Seconds the keeper may take to say it holds the service.
READY_TIMEOUT = 30.0
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from pytest_services._keep.keeper import main; main()"
)


class KeptPorts:
    """``port_getter`` of a kept service's start function: ports the keeper will hold."""

    def __init__(self, lock_dir: StrPath, port_range: PortRange | None = None) -> None:
        path = _registry.table("port", lock_dir).path  # where every session looks
        shared = os.path.dirname(path) == _registry.host_lock_dir()
        self.table = LockTable(open_table(path, shared=shared), path)
        self.ports: list[int] = []
        self._ranges = candidate_ports(port_range)

    def __call__(self) -> int:
        total = sum(len(r) for r in self._ranges)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            index = random.randrange(total)
            for candidate in self._ranges:
                if index < len(candidate):
                    port = candidate[index]
                    break
                index -= len(candidate)
            # Another open file's lock (this process's sessions' included) refuses the byte.
            if port not in self.ports and port_binds(port) and self.table.lock(port):
                self.ports.append(port)
                return port
        raise LockError("No free port found for a kept service within 20 s.")

    def close(self) -> None:
        """Drop this process's hold; the keeper's copy of the descriptor keeps the locks."""
        self.table.close()


def _pidfd(process: ServiceProcess) -> int:
    """A pidfd of ``process`` (our child, not yet reaped, so its pid is its own)."""
    if process.poll() is not None:
        raise KeeperError(f"{process.name!r} (pid {process.pid}) ended before it was kept.")
    fd: int = os.pidfd_open(process.pid)
    if process.poll() is not None:
        os.close(fd)
        raise KeeperError(f"{process.name!r} (pid {process.pid}) ended before it was kept.")
    return fd


def hand_over(
    *,
    root: str,
    slot: str,
    key: str,
    processes: Sequence[ServiceProcess],
    tables: Sequence[int],
    idle: float,
    grace: float,
    record: Callable[[int, int], None],
) -> None:
    """Start the keeper of ``slot`` for ``processes``; ``record(pid, start time)`` of the
    keeper writes the slot's record, after which the keeper holds the service."""
    pidfds = [_pidfd(process) for process in processes]
    config = {
        "root": root,
        "slot": slot,
        "key": key,
        "idle": idle,
        "grace": grace,
        "services": [
            {"fd": fd, "pid": p.pid, "tag": p.services_tag, "name": p.name}
            for fd, p in zip(pidfds, processes)
        ],
    }
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    log = os.open(
        os.path.join(slot, "logs", "keeper.log"),
        os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
        0o600,
    )
    try:
        starter = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _BOOT, package_parent],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            pass_fds=(*pidfds, *tables),
            start_new_session=True,
            cwd="/",
        )
    finally:
        os.close(log)
        for fd in pidfds:
            os.close(fd)
    assert starter.stdin is not None and starter.stdout is not None
    try:
        starter.stdin.write(json.dumps(config).encode() + b"\n")
        starter.stdin.flush()
        answer = _read_line(starter.stdout, READY_TIMEOUT).split()
        if len(answer) != 3 or answer[0] != b"ready":
            said = b" ".join(answer).decode(errors="replace")
            raise KeeperError(
                f"The keeper of a kept service did not start (it said {said!r}); see "
                f"{os.path.join(slot, 'logs', 'keeper.log')}."
            )
        record(int(answer[1]), int(answer[2]))
        starter.stdin.write(b"recorded\n")  # from now on, a missing record means: stop
    finally:
        with contextlib.suppress(OSError):
            starter.stdin.close()  # without "recorded", the keeper stops what it holds
        starter.stdout.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            starter.wait(timeout=READY_TIMEOUT)


def _read_line(stream: object, timeout: float) -> bytes:
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)  # type: ignore[arg-type]
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n") and time.monotonic() < deadline:
        if not selector.select(max(0.0, deadline - time.monotonic())):
            break
        chunk = os.read(stream.fileno(), 256)  # type: ignore[attr-defined]
        if not chunk:
            break
        data += chunk
    selector.close()
    return data
