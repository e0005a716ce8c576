"""Kernel locks of the kept services: slot locks, keeper locks and the leases of runs.

Every lock here is an ``flock`` on a file in the user's private keep folder, so the kernel
drops it when its holder dies, however it dies.  Lock files are never removed (a lock on a
removed file would guard nothing); only lease files of dead runs are, by whoever finds them
unlocked.

A *run lease* (``runs/RUN.lease``) is held, shared, by every process of one run that uses a
kept service: the pytest-xdist controller for the whole run, and the process that attached
the service.  A kept service's *lease marks* (``leases/RUN`` in its slot) name the runs that
attached it; a mark counts only while its run lease is held.  Only the standard library is
used: the keeper process imports this module without site-packages.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import time

from pytest_services._reserve.lockfiles import still_linked

#: Folder of the run leases in the keep folder, and of the lease marks in a slot.
RUNS = "runs"
LEASES = "leases"
#: What a run id looks like (a uuid4 in hexadecimal): nothing else is taken for one.
RUN_ID = re.compile(r"[0-9a-f]{32}")
_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


def open_lock(path: str) -> int:
    """Open (creating) the lock file ``path``; refuse links and anything but a regular file."""
    fd = os.open(path, _FLAGS, 0o600)
    if not _is_own_file(fd):
        os.close(fd)
        raise OSError(errno.EPERM, f"{path} is not a regular file of yours")
    return fd


def _is_own_file(fd: int) -> bool:
    info = os.fstat(fd)
    return (info.st_mode & 0o170000) == 0o100000 and info.st_uid == os.getuid()


def try_lock(path: str, shared: bool = False) -> int | None:
    """Lock ``path`` unless someone holds it; never waits; the open descriptor, or None."""
    fd = open_lock(path)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def wait_lock(path: str, timeout: float) -> int | None:
    """Lock ``path`` exclusively, waiting up to ``timeout`` s; the descriptor, or None."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        fd = try_lock(path)
        if fd is not None or time.monotonic() >= deadline:
            return fd
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def is_held(path: str) -> bool:
    """Tell whether some live process holds a lock on ``path`` (a missing file: no)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def run_lease_path(root: str, run_id: str) -> str:
    return os.path.join(root, RUNS, f"{run_id}.lease")


class RunLease:
    """This process's share of the lease of run ``run_id``, held until :meth:`release`."""

    def __init__(self, root: str, run_id: str) -> None:
        if not RUN_ID.fullmatch(run_id):
            raise ValueError(f"not a run id: {run_id!r}")
        self.root, self.run_id = root, run_id
        self._fd: int | None = None
        self._pid = os.getpid()

    def hold(self) -> None:
        """Take the lease if this process does not hold it yet (again after a fork)."""
        if self._fd is not None and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        path = run_lease_path(self.root, self.run_id)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        while True:
            fd = open_lock(path)
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits only for a sweeper's instant
            if still_linked(fd, path):
                self._fd = fd
                return
            os.close(fd)  # swept as we opened it: lock the new file

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None and self._pid == os.getpid():
            os.close(fd)


def sweep_runs(root: str) -> None:
    """Remove the lease files of runs that ended."""
    folder = os.path.join(root, RUNS)
    with contextlib.suppress(OSError):
        for entry in os.listdir(folder):
            path = os.path.join(folder, entry)
            fd = None
            with contextlib.suppress(OSError):
                fd = try_lock(path)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.unlink(path)  # while locked: a new holder sees it gone and retries
                os.close(fd)


def mark(slot: str, run_id: str, idle: float) -> None:
    """Record that run ``run_id`` attached the service of ``slot``, which it keeps for
    ``idle`` seconds after its last use."""
    folder = os.path.join(slot, LEASES)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    path = os.path.join(folder, run_id)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps({"idle": idle}).encode())
    finally:
        os.close(fd)


def live_marks(root: str, slot: str, *, prune: bool = True) -> dict[str, float]:
    """The runs that hold a lease on the service of ``slot``, with the idle timeout each
    asked for; marks of ended runs are removed (with ``prune``)."""
    folder = os.path.join(slot, LEASES)
    found: dict[str, float] = {}
    try:
        entries = os.listdir(folder)
    except OSError:
        return found
    for entry in entries:
        path = os.path.join(folder, entry)
        if RUN_ID.fullmatch(entry) and is_held(run_lease_path(root, entry)):
            found[entry] = _idle_of(path)
        elif prune:
            with contextlib.suppress(OSError):
                os.unlink(path)
    return found


def _idle_of(path: str) -> float:
    try:
        with open(path, "rb") as marked:
            value = json.loads(marked.read(200)).get("idle")
    except (OSError, ValueError, AttributeError):
        return 0.0
    return float(value) if isinstance(value, (int, float)) and value > 0 else 0.0
