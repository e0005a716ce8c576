"""Processes of shared services that another process started: described, and watched.

The worker that starts a shared service is its parent and sees it die with ``poll()``; every
other worker of the run only has what the starter published: each process's pid, start time
(so that a reused pid is not taken for it), command and log.  From that, ``/proc`` tells
whether it still runs and, while it is a zombie, how it ended.  Nothing here needs pytest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from pytest_services._engine import ledger
from pytest_services.process import ServiceProcess


@dataclass(frozen=True)
class RemoteService:
    """A process of shared service ``shared``, started by another worker of the run."""

    shared: str
    name: str
    pid: int
    since: int
    command: tuple[str, ...]
    log_path: Optional[Path]

    def exit_status(self) -> tuple[bool, Optional[int]]:
        """``(True, None)`` while it runs; else ``(False, returncode or None if unknown)``."""
        fields = _stat(self.pid)
        if fields is None or int(fields[19]) != self.since:
            return False, None  # gone, or its pid is another process's now
        if fields[0] != "Z":
            return True, None
        if len(fields) < 50:
            return False, None
        status = int(fields[49])  # the zombie's wait status (Linux 3.5 and newer)
        return False, -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


#: Processes of shared services that this process uses but did not start.
_watched: list[RemoteService] = []


def describe(process: ServiceProcess) -> dict[str, Any]:
    """What another worker needs to watch ``process``, as JSON."""
    fields = _stat(process.pid)
    return {
        "name": process.name,
        "pid": process.pid,
        "since": int(fields[19]) if fields else 0,
        "command": process.command,
        "log": os.fspath(process.log_path) if process.log_path is not None else None,
    }


def watch(shared: str, descriptions: list[dict[str, Any]]) -> None:
    """Watch the processes of shared service ``shared`` that another worker described."""
    if descriptions:
        ledger.in_use()  # the report hooks notice their deaths from now on
    for item in descriptions:
        _watched.append(
            RemoteService(
                shared,
                str(item["name"]),
                int(item["pid"]),
                int(item["since"]),
                tuple(item["command"]),
                Path(item["log"]) if item.get("log") else None,
            )
        )


def remote_services() -> list[RemoteService]:
    """The processes of shared services that this process watches, oldest first."""
    return list(_watched)


def _stat(pid: int) -> Optional[list[str]]:
    """The fields of ``/proc/PID/stat`` from the state on (field 3), or None."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
