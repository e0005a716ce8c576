"""``--services-list`` and ``--services-stop``: what is kept, and stopping it.  No pytest."""

from __future__ import annotations

import os
import time

from pytest_services._keep import leases, store
from pytest_services._keep.lookup import discard, duration


def _entries(root: str) -> list[tuple[str, str, store.Record]]:
    found = []
    for key, slot in store.all_slots(root):
        record, _ = store.read_record(slot, key)
        if record is not None:
            found.append((key, slot, record))
    return found


def list_kept(root: str) -> list[str]:
    """One block of lines per kept service of the user."""
    entries = _entries(root)
    if not entries:
        return [f"no kept services (in {root})"]
    lines = [f"kept services (in {root}):"]
    now = time.time()
    for key, slot, record in entries:
        attached = len(leases.live_marks(root, slot, prune=False))
        idle = "in use" if attached else duration(now - store.last_used(slot, record.created))
        alive = all(store.is_running(p.pid, p.since) for p in record.processes)
        state = "" if alive else " (its service ended: removed at the next lookup)"
        pids = ", ".join(str(p.pid) for p in record.processes)
        lines += [
            f"{record.name}: key {key[:12]}, copy {os.path.basename(slot)}, pid {pids}{state}",
            f"  age {duration(now - record.created)}, idle {idle}, runs {record.runs} "
            f"(attached now: {attached})",
            f"  command: {record.command()}",
            *(f"  log: {p.log}" for p in record.processes if p.log),
            f"  checkout: {record.rootdir}",
        ]
    return lines


def stop_kept(root: str, which: str) -> tuple[list[str], bool]:
    """Stop the kept services named ``which`` (a name, a key prefix, or ``all``); the lines
    to print, and whether any matched."""
    lines: list[str] = []
    matched = False
    for key, slot, record in _entries(root):
        if which != "all" and which not in (record.name, key[: len(which)]):
            continue
        matched = True
        lock = leases.wait_lock(os.path.join(slot, store.SLOT_LOCK), 30)
        try:
            attached = leases.live_marks(root, slot, prune=False)
            gone = discard(slot, record)
        finally:
            if lock is not None:
                os.close(lock)
        note = f", which {len(attached)} running run(s) used" if attached else ""
        if gone:
            lines.append(f"stopped {record.name} (key {key[:12]}{note})")
        else:
            lines.append(f"asked {record.name} (key {key[:12]}) to stop; it is still stopping")
    if not matched:
        lines.append("no kept services" if which == "all" else f"no kept service matches {which!r}")
    return lines, matched or which == "all"
