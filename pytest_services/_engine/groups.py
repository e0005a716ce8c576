"""Signalling and waiting for whole process groups (Linux ``/proc`` where it helps)."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import time

from pytest_services._engine.readiness import FIRST_DELAY, MAX_DELAY
from pytest_services._engine.reaper import tagged_processes


def signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to every process of group ``pgid`` that we may signal."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass
    except PermissionError:
        # A member changed its user and we may not signal it; signal what we can.
        for pid in group_members(pgid):
            with contextlib.suppress(OSError):
                os.kill(pid, signum)


def wait_for_group(process: subprocess.Popen, deadline: float) -> None:  # type: ignore[type-arg]
    """Wait until the group led by ``process`` is empty, or ``deadline`` passes."""
    delay = FIRST_DELAY
    while time.monotonic() < deadline:
        process.poll()  # reap the leader so that it does not count as alive
        if not group_alive(process.pid):
            return
        time.sleep(delay)
        delay = min(delay * 1.5, MAX_DELAY)


def signal_tagged(tag: str | None, signum: int) -> list[int]:
    """Send ``signum`` to every process tagged ``tag``, wherever it went; return them."""
    pids = tagged_processes({tag}) if tag is not None else []
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signum)
    return pids


def tagged_alive(tag: str | None) -> bool:
    """Tell whether a process tagged ``tag`` still runs (zombies do not count)."""
    return bool(tag and tagged_processes({tag}))  # a zombie's environment reads empty


def group_members(pgid: int) -> list[int]:
    """Return the pids in process group ``pgid`` that are not zombies (Linux ``/proc``)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(entry))
    return members


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except OSError as exc:
        if exc.errno != errno.EPERM:
            return False
    # Some process is in the group; zombies count too, so ask /proc where it exists.
    if os.path.isdir("/proc/self"):
        return bool(group_members(pgid))
    return True


def kill_group(process: subprocess.Popen) -> None:  # type: ignore[type-arg]
    """SIGKILL what is left of ``process``'s group (it leads one) and reap the leader."""
    if process.poll() is None or group_alive(process.pid):
        signal_group(process.pid, signal.SIGKILL)
        process.wait()
        wait_for_group(process, time.monotonic() + 10.0)


def stop_groups(groups: list[int], grace: float, tags: dict[int, str] | None = None) -> None:
    """SIGTERM the process groups (not necessarily ours) and what carries their ``tags``, and
    SIGKILL those still alive after ``grace`` seconds."""
    tags = tags or {}
    for pgid in groups:
        signal_group(pgid, signal.SIGTERM)
        signal_tagged(tags.get(pgid), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(
        group_alive(pgid) or tagged_alive(tags.get(pgid)) for pgid in groups
    ):
        time.sleep(0.02)
    for pgid in groups:
        signal_group(pgid, signal.SIGKILL)
        signal_tagged(tags.get(pgid), signal.SIGKILL)
