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
(``+PGID TAG``), and whatever carries the tag is stopped with the group.

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
#: The environment variable that marks every process a service started, wherever it went.
TAG_VARIABLE = "PYTEST_SERVICES_TAG"

_lock = threading.Lock()
_watchdog: subprocess.Popen[bytes] | None = None
_owner_pid: int | None = None
_watched: dict[int, str | None] = {}
_folders: set[str] = set()
_lifeline: int | None = None
#: How often the watchdog checks its lifeline where the kernel has no pidfd_open.
LIFELINE_POLL = 0.25


def watch(pgid: int, tag: str | None = None) -> None:
    """Have the watchdog stop group ``pgid``, and the processes tagged ``tag``, if this
    process dies."""
    with _lock:
        _adopt()
        _watched[pgid] = tag
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
    state = [_watch_line(pgid, tag) for pgid, tag in sorted(_watched.items())]
    state += [f"D{path.encode().hex()}\n" for path in sorted(_folders)]
    if _lifeline is not None:
        state.append(f"!{_lifeline}\n")
    _watchdog.stdin.write("".join(state).encode())
    _watchdog.stdin.flush()


def _watch_line(pgid: int, tag: str | None) -> str:
    return f"+{pgid} {tag}\n" if tag else f"+{pgid}\n"


def tagged_processes(tags: set[str]) -> list[int]:
    """The live processes whose environment carries one of ``tags`` (Linux ``/proc``).

    Only those whose environment this process may read are found: its user's, or all as
    root.
    """
    if not tags:
        return []
    prefix = f"{TAG_VARIABLE}=".encode()
    wanted = {tag.encode() for tag in tags}
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                data = environ.read()
        except OSError:
            continue
        start = data.find(prefix)
        while start > 0 and data[start - 1] != 0:  # inside another variable: look further
            start = data.find(prefix, start + 1)
        if start < 0:
            continue
        end = data.find(b"\0", start)
        if data[start + len(prefix) : end if end >= 0 else None] in wanted:
            found.append(int(entry))
    return found


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_all(groups: dict[int, str | None], signum: int) -> list[int]:
    """Signal every group, and every process tagged as theirs; return the tagged ones."""
    for pgid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signum)
    escaped = tagged_processes({tag for tag in groups.values() if tag})
    for pid in escaped:
        with contextlib.suppress(OSError):
            os.kill(pid, signum)
    return escaped


def _open_lifeline(pid: int) -> int | None:
    """A pidfd that becomes readable when ``pid`` exits, or None (then it is polled)."""
    try:
        return os.pidfd_open(pid)  # type: ignore[attr-defined,unused-ignore]
    except (AttributeError, OSError):
        return None


def _process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs; a zombie nobody reaps counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def _watch_until_orphaned(groups: dict[int, str | None], folders: set[str]) -> None:
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
                    pgid, _, tag = number.partition(b" ")
                    groups[int(pgid)] = tag.decode() or None
                elif kind == b"-":
                    groups.pop(int(number), None)
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


def _any_alive(groups: dict[int, str | None], pids: list[int]) -> bool:
    return any(_alive(pgid) for pgid in groups) or any(not _process_gone(pid) for pid in pids)


def _main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    groups: dict[int, str | None] = {}
    folders: set[str] = set()
    _watch_until_orphaned(groups, folders)
    escaped = _kill_all(groups, signal.SIGTERM)
    deadline = time.monotonic() + REAP_GRACE
    while time.monotonic() < deadline and _any_alive(groups, escaped):
        time.sleep(0.02)
    escaped = _kill_all(groups, signal.SIGKILL)
    deadline = time.monotonic() + REAP_GRACE
    while time.monotonic() < deadline and _any_alive(groups, escaped):
        time.sleep(0.02)  # a dying server may still write into its folder
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    _main()
