"""A watchdog process that stops this process's services if this process dies.

The first service started spawns the watchdog: a tiny Python process in its own session
that reads process-group ids from a pipe (``+PGID`` to watch, ``-PGID`` to forget).  When the
pipe reaches end-of-file -- because pytest exited, or was killed with SIGKILL or SIGTERM --
the watchdog sends SIGTERM to every group still watched, waits briefly, SIGKILLs them and
exits.  Unlike ``PR_SET_PDEATHSIG`` this reaches grandchildren and survives services that
change their user.

This file runs as a script (``python -I -S _reaper.py``), so it imports nothing from the
package in that role.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

#: Seconds the watchdog waits between SIGTERM and SIGKILL.
REAP_GRACE = 1.0

_lock = threading.Lock()
_watchdog: subprocess.Popen[bytes] | None = None
_owner_pid: int | None = None
_watched: set[int] = set()


def watch(pgid: int) -> None:
    """Have the watchdog stop group ``pgid`` if this process dies."""
    with _lock:
        _adopt()
        _watched.add(pgid)
        _send(f"+{pgid}\n")


def forget(pgid: int) -> None:
    """Tell the watchdog that group ``pgid`` was stopped."""
    with _lock:
        _adopt()
        _watched.discard(pgid)
        if _watchdog is not None:
            _send(f"-{pgid}\n")


def start() -> None:
    """Start the watchdog now, so that the first service does not wait for it."""
    with _lock:
        _adopt()
        if _watchdog is None or _watchdog.poll() is not None:
            _send("")


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
        [sys.executable, "-I", "-S", os.path.abspath(__file__)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    assert _watchdog.stdin is not None
    _watchdog.stdin.write("".join(f"+{pgid}\n" for pgid in sorted(_watched)).encode())
    _watchdog.stdin.flush()


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_all(groups: set[int], signum: int) -> None:
    for pgid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signum)


def _main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    groups: set[int] = set()
    for raw in sys.stdin.buffer:
        line = raw.strip()
        if line[:1] == b"+":
            groups.add(int(line[1:]))
        elif line[:1] == b"-":
            groups.discard(int(line[1:]))
    _kill_all(groups, signal.SIGTERM)
    deadline = time.monotonic() + REAP_GRACE
    while time.monotonic() < deadline and any(_alive(pgid) for pgid in groups):
        time.sleep(0.02)
    _kill_all(groups, signal.SIGKILL)


if __name__ == "__main__":
    _main()
