"""A watchdog process that stops this process's services if this process dies.

The first service started spawns the watchdog: a tiny Python process in its own session
that reads process-group ids from a pipe (``+PGID`` to watch, ``-PGID`` to forget), and
folders (``D`` or ``d`` and the path in hexadecimal) to remove.  When the pipe reaches
end-of-file -- because pytest exited, or was killed with SIGKILL or SIGTERM -- the watchdog
sends SIGTERM to every group still watched, waits briefly, SIGKILLs them, removes the folders
still named and exits.  Unlike ``PR_SET_PDEATHSIG`` this reaches grandchildren and survives
services that change their user.

A pytest-xdist worker can outlive its controller for as long as its current test runs, so
a worker also names a *lifeline* (``!PID``, the controller): the watchdog acts when that
process ends too.

This file runs as a script (``python -I -S _reaper.py``), so it imports nothing from the
package in that role.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
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
_folders: set[str] = set()
_lifeline: int | None = None
#: How often the watchdog checks its lifeline where the kernel has no pidfd_open.
LIFELINE_POLL = 0.25


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
        [sys.executable, "-I", "-S", os.path.abspath(__file__)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    assert _watchdog.stdin is not None
    state = [f"+{pgid}\n" for pgid in sorted(_watched)]
    state += [f"D{path.encode().hex()}\n" for path in sorted(_folders)]
    if _lifeline is not None:
        state.append(f"!{_lifeline}\n")
    _watchdog.stdin.write("".join(state).encode())
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


def _open_lifeline(pid: int) -> int | None:
    """A pidfd that becomes readable when ``pid`` exits, or None (then it is polled)."""
    try:
        return os.pidfd_open(pid)  # type: ignore[attr-defined,unused-ignore]
    except (AttributeError, OSError):
        return None


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _watch_until_orphaned(groups: set[int], folders: set[str]) -> None:
    """Read commands from stdin until it closes or the lifeline process ends."""
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ, "pipe")
    lifeline: int | None = None
    buffer = b""
    while True:
        timeout = LIFELINE_POLL if lifeline is not None and lifeline < 0 else None
        for key, _ in selector.select(timeout):
            if key.data == "lifeline":
                return
            data = os.read(0, 65536)
            if not data:
                return
            *lines, buffer = (buffer + data).split(b"\n")
            for line in lines:
                kind, number = line[:1], line[1:].strip()
                if kind == b"+":
                    groups.add(int(number))
                elif kind == b"-":
                    groups.discard(int(number))
                elif kind == b"D":
                    folders.add(bytes.fromhex(number.decode()).decode())
                elif kind == b"d":
                    folders.discard(bytes.fromhex(number.decode()).decode())
                elif kind == b"!" and lifeline is None:
                    pidfd = _open_lifeline(int(number))
                    if pidfd is None:
                        lifeline = -int(number)  # negative: poll it
                    else:
                        lifeline = pidfd
                        selector.register(pidfd, selectors.EVENT_READ, "lifeline")
        if lifeline is not None and lifeline < 0 and _process_gone(-lifeline):
            return


def _main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    groups: set[int] = set()
    folders: set[str] = set()
    _watch_until_orphaned(groups, folders)
    _kill_all(groups, signal.SIGTERM)
    deadline = time.monotonic() + REAP_GRACE
    while time.monotonic() < deadline and any(_alive(pgid) for pgid in groups):
        time.sleep(0.02)
    _kill_all(groups, signal.SIGKILL)
    deadline = time.monotonic() + REAP_GRACE
    while time.monotonic() < deadline and any(_alive(pgid) for pgid in groups):
        time.sleep(0.02)  # a dying server may still write into its folder
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    _main()
