"""The watchdog itself: a tiny process that stops a pytest's services once that pytest dies.

:mod:`pytest_services._engine.reaper` starts it and feeds it, on its standard input, lines
that name what to stop: ``+PGID`` or ``+PGID TAG`` a process group to watch (and the tag
its processes carry), ``-PGID`` a group stopped, ``TTAG``/``tTAG`` a program about to start
with that tag (and taken back), ``D``/``d`` and a path in hexadecimal a folder to remove
(and taken back), ``!PID`` a lifeline process.  At end-of-file, or when the lifeline ends,
it sends SIGTERM to every group and tagged process, SIGKILL after a grace, removes the
folders and exits.

This file runs as a script (``python -I -S watchdog.py``), so it imports nothing from the
package.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import time

#: Seconds the watchdog waits between SIGTERM and SIGKILL.
REAP_GRACE = 1.0
#: The environment variable that marks every process a service started, wherever it went.
TAG_VARIABLE = "PYTEST_SERVICES_TAG"
#: How often the watchdog checks its lifeline where the kernel has no pidfd_open.
LIFELINE_POLL = 0.25


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


def _kill_all(groups: dict[int, str | None], expected: set[str], signum: int) -> list[int]:
    """Signal every group, and every process tagged as theirs or as expected; return the
    tagged ones."""
    for pgid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signum)
    escaped = tagged_processes({tag for tag in groups.values() if tag} | expected)
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


def _watch_until_orphaned(
    groups: dict[int, str | None], expected: set[str], folders: set[str]
) -> None:
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
                    expected.discard(tag.decode())
                elif kind == b"T":
                    expected.add(number.decode())
                elif kind == b"t":
                    expected.discard(number.decode())
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
    expected: set[str] = set()
    folders: set[str] = set()
    _watch_until_orphaned(groups, expected, folders)
    escaped = _kill_all(groups, expected, signal.SIGTERM)
    # A program being started may not carry its tag yet (it is between fork and exec):
    # while some are expected, look again until the grace ends.
    deadline = time.monotonic() + REAP_GRACE
    while time.monotonic() < deadline and (expected or _any_alive(groups, escaped)):
        time.sleep(0.02)
        if expected:
            escaped = sorted({*escaped, *_kill_all({}, expected, signal.SIGTERM)})
    escaped = _kill_all(groups, expected, signal.SIGKILL)
    deadline = time.monotonic() + REAP_GRACE
    while time.monotonic() < deadline and _any_alive(groups, escaped):
        time.sleep(0.02)  # a dying server may still write into its folder
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    _main()
