"""A watchdog process that stops this process's services if this process dies.

The first service started spawns the watchdog: a tiny Python process in its own session
that reads process-group ids from a pipe (``+PGID`` to watch, ``-PGID`` to forget), and
folders (``D`` or ``d`` and the path in hexadecimal) to remove.  When the pipe reaches
end-of-file -- because pytest exited, or was killed with SIGKILL or SIGTERM -- the watchdog
sends SIGTERM to every group still watched, waits briefly, SIGKILLs them, removes the folders
still named and exits.  Unlike ``PR_SET_PDEATHSIG`` this reaches grandchildren and survives
services that change their user.

A process that leaves its group (a daemonising server calls ``setsid()`` and forks) is found
by its environment: each service runs with ``PYTEST_SERVICES_TAG`` set to a tag of its own,
which its descendants inherit wherever they move; a group is watched with its tag
(``+PGID TAG``), and whatever carries the tag is stopped with the group.  The tag is sent
before the program starts (``TTAG``; ``tTAG`` takes it back), so a pytest killed between
starting a program and naming its group still leaves nothing running: the watchdog looks
for expected tags for a moment longer, in case one was still being executed.

A pytest-xdist worker can outlive its controller for as long as its current test runs, so
a worker also names a *lifeline* (``!PID``, the controller): the watchdog acts when that
process ends too.

The watchdog's own code is :mod:`pytest_services._engine.watchdog`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading

from pytest_services._engine import watchdog as _watchdog_script
from pytest_services._engine.watchdog import REAP_GRACE
from pytest_services._engine.watchdog import TAG_VARIABLE as TAG_VARIABLE
from pytest_services._engine.watchdog import tagged_processes as tagged_processes

_lock = threading.Lock()
_watchdog: subprocess.Popen[bytes] | None = None
_owner_pid: int | None = None
_watched: dict[int, str | None] = {}
_expected: set[str] = set()
_folders: set[str] = set()
_lifeline: int | None = None


def expect(tag: str) -> None:
    """Have the watchdog stop the processes tagged ``tag`` if this process dies: call it
    before starting the program, and :func:`watch` once its group is known."""
    with _lock:
        _adopt()
        _expected.add(tag)
        _send(f"T{tag}\n")


def unexpect(tag: str) -> None:
    """Take back :func:`expect`: the program tagged ``tag`` did not start."""
    with _lock:
        _adopt()
        _expected.discard(tag)
        if _watchdog is not None:
            _send(f"t{tag}\n")


def watch(pgid: int, tag: str | None = None) -> None:
    """Have the watchdog stop group ``pgid``, and the processes tagged ``tag``, if this
    process dies."""
    with _lock:
        _adopt()
        _watched[pgid] = tag
        _expected.discard(tag or "")
        _send(_watch_line(pgid, tag))


def forget(pgid: int) -> None:
    """Tell the watchdog that group ``pgid`` was stopped."""
    with _lock:
        _adopt()
        _watched.pop(pgid, None)
        if _watchdog is not None:
            _send(f"-{pgid}\n")


def watch_folder(path: str) -> None:
    """Have the watchdog remove folder ``path`` if this process dies before it does."""
    with _lock:
        _adopt()
        _folders.add(path)
        _send(f"D{path.encode().hex()}\n")


def forget_folder(path: str) -> None:
    """Tell the watchdog that folder ``path`` was removed, or is to be kept."""
    with _lock:
        _adopt()
        _folders.discard(path)
        if _watchdog is not None:
            _send(f"d{path.encode().hex()}\n")


def start() -> None:
    """Start the watchdog now, so that the first service does not wait for it."""
    with _lock:
        _adopt()
        if _watchdog is None or _watchdog.poll() is not None:
            _send("")


def set_lifeline(pid: int) -> None:
    """Have the watchdog stop the services also when process ``pid`` ends."""
    global _lifeline
    with _lock:
        _adopt()
        _lifeline = pid
        if _watchdog is not None:
            _send(f"!{pid}\n")


def watchdog_pid() -> int | None:
    """Return the pid of this process's watchdog, if one was started."""
    return _watchdog.pid if _watchdog is not None and _owner_pid == os.getpid() else None


def close() -> None:
    """Close the pipe: the watchdog stops what is left and exits."""
    global _watchdog
    with _lock:
        _adopt()
        if _watchdog is None:
            return
        watchdog, _watchdog = _watchdog, None
        _watched.clear()
        _expected.clear()
        _folders.clear()
        with contextlib.suppress(OSError):
            assert watchdog.stdin is not None
            watchdog.stdin.close()
        try:
            watchdog.wait(timeout=REAP_GRACE + 5)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait()


def _adopt() -> None:
    """After a fork the child owns neither its parent's watchdog nor its services."""
    global _watchdog, _owner_pid
    if _owner_pid != os.getpid():
        _watchdog, _owner_pid = None, os.getpid()
        _watched.clear()
        _expected.clear()
        _folders.clear()


def _send(line: str) -> None:
    global _watchdog
    if _watchdog is not None and _watchdog.poll() is None:
        try:
            assert _watchdog.stdin is not None
            _watchdog.stdin.write(line.encode())
            _watchdog.stdin.flush()
            return
        except BrokenPipeError:
            pass
    # Not started yet, or it died: a new one must know every group still running.
    _watchdog = subprocess.Popen(
        [sys.executable, "-I", "-S", os.path.abspath(_watchdog_script.__file__)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    assert _watchdog.stdin is not None
    state = [_watch_line(pgid, tag) for pgid, tag in sorted(_watched.items())]
    state += [f"T{tag}\n" for tag in sorted(_expected)]
    state += [f"D{path.encode().hex()}\n" for path in sorted(_folders)]
    if _lifeline is not None:
        state.append(f"!{_lifeline}\n")
    _watchdog.stdin.write("".join(state).encode())
    _watchdog.stdin.flush()


def _watch_line(pgid: int, tag: str | None) -> str:
    return f"+{pgid} {tag}\n" if tag else f"+{pgid}\n"
