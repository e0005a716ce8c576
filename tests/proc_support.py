"""What the tests that look for processes share: is a pid alive, which processes name a
text in their command line."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """Tell whether ``pid`` runs (zombies count as gone: pid 1 may not reap them here)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def processes_naming(text: str, *, whole_argument: bool = False) -> list[int]:
    """Live processes with ``text`` in their command line (as one argument, if asked)."""
    wanted = os.fsencode(text)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                line = cmdline.read()
        except OSError:
            continue
        named = wanted in line.split(b"\0") if whole_argument else wanted in line
        if named and alive(int(entry)):
            found.append(int(entry))
    return found
