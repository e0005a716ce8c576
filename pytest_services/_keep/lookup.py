"""Lookup-or-start of kept services, under one kernel lock per copy.

A key has up to :data:`~pytest_services._keep.store.MAX_SLOTS` copies (slots).  A run takes
the first slot whose lock it gets and whose service is alive and not leased by another run
-- or, with ``concurrent``, the first slot whatever its leases, waiting for its lock -- and
leases it before the lock is released; an empty slot is filled by running the start
function under that lock.  So two runs never start the same copy, and never share one
unless the service says it can serve both.  Nothing here needs pytest.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from pytest_services._engine import reaper as _reaper
from pytest_services._keep import leases, store
from pytest_services._keep.handover import KeptPorts, hand_over
from pytest_services._reserve.ports import PortRange
from pytest_services.process import ServiceProcess

Outcome = dict[str, Any]
#: ``start(data folder, log folder, port_getter)``: the outcome and the processes started.
StartIn = Callable[[str, str, KeptPorts], tuple[Outcome, list[ServiceProcess]]]
#: Seconds a lookup waits for the keeper of a discarded copy to stop it.
STOP_WAIT = 30.0


@dataclass
class KeptReport:
    """What became of one kept service in this run, for the terminal summary."""

    name: str
    key: str
    how: str  # "reused", "started" or "not kept"
    why: str = ""
    minutes: float = 0.0

    def describe(self) -> str:
        key = self.key[:12]
        if self.how == "reused":
            return f"{self.name}: reused (key {key}; {self.why})"
        if self.how == "started":
            return (
                f"{self.name}: started and kept for {self.minutes:g} min after its last use "
                f"(key {key}; not reused: {self.why})"
            )
        return f"{self.name}: not kept ({self.why})"


def describe(record: store.Record) -> list[dict[str, Any]]:
    """The processes of ``record`` as other processes watch them (``_remote_services``)."""
    return [
        {"name": p.name, "pid": p.pid, "since": p.since, "command": p.command, "log": p.log}
        for p in record.processes
    ]


def signal_keeper(record: store.Record, signum: int = signal.SIGTERM) -> bool:
    """Signal the keeper named by ``record`` if it is that very process; tell whether."""
    try:
        fd = os.pidfd_open(record.keeper_pid)
    except OSError:
        return False
    try:
        if store.process_since(record.keeper_pid) != record.keeper_since:
            return False  # the pid is another process's now
        signal.pidfd_send_signal(fd, signum)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def wait_keeper_gone(slot: str, timeout: float = STOP_WAIT) -> bool:
    """Wait until no keeper holds ``slot``; tell whether none does."""
    fd = leases.wait_lock(os.path.join(slot, store.KEEPER_LOCK), timeout)
    if fd is None:
        return False
    os.close(fd)
    return True


def discard(slot: str, record: Optional[store.Record]) -> bool:
    """Remove the record of ``slot`` and have its keeper stop the service; tell whether it
    is gone.  A record that was not trusted names no process: its keeper, seeing it gone,
    stops what it holds by itself."""
    store.remove(slot, store.RECORD)
    if record is not None:
        signal_keeper(record)
    return wait_keeper_gone(slot)


class KeptServices:
    """The kept services of one pytest process: looked up, started and leased."""

    def __init__(
        self,
        *,
        root: str,
        run_id: str,
        minutes: float,
        lock_dir: str,
        rootdir: str,
        port_range: PortRange | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.root = root
        self.run_id = run_id
        self.minutes = minutes
        self.lock_dir = lock_dir
        self.rootdir = rootdir
        self.port_range = port_range
        self.lease = leases.RunLease(root, run_id)
        self.reports: list[KeptReport] = []
        self._log = log or logging.getLogger("pytest_services")

    def get(
        self, name: str, key: str, concurrent: bool, timeout: float, start: StartIn
    ) -> Optional[Outcome]:
        """The outcome of kept service ``name``: reused, or started here and kept.

        None when every copy is in use by other runs: the caller starts one for this run
        alone.
        """
        self.lease.hold()
        for number in [0] if concurrent else range(store.MAX_SLOTS):
            slot = store.make_slot(self.root, key, number)
            path = os.path.join(slot, store.SLOT_LOCK)
            lock = leases.wait_lock(path, timeout) if concurrent else leases.try_lock(path)
            if lock is None:
                continue  # another run is looking this copy up, and will lease it
            try:
                outcome = self._in_slot(slot, name, key, concurrent, start)
            finally:
                os.close(lock)
            if outcome is not None:
                return outcome
        why = f"all {store.MAX_SLOTS} kept copies are in use by other runs"
        self.reports.append(KeptReport(name, key, "not kept", why))
        return None

    def _in_slot(
        self, slot: str, name: str, key: str, concurrent: bool, start: StartIn
    ) -> Optional[Outcome]:
        record, problem = store.read_record(slot, key)
        reason = None
        if record is not None:
            if self._alive(slot, record):
                others = set(leases.live_marks(self.root, slot)) - {self.run_id}
                if others and not concurrent:
                    return None
                leases.mark(slot, self.run_id, self.minutes * 60)
                record.runs += 1
                store.write_record(slot, record)
                age = duration(time.time() - record.created)
                why = f"kept {age} ago, {record.runs} runs"
                self.reports.append(KeptReport(name, key, "reused", why))
                return {"value": record.value, "services": describe(record), "kept": "reused"}
            reason = "service died"
            if not discard(slot, record):
                return None  # its keeper is still stopping it: another copy
        elif problem:
            reason = f"{problem}: discarded"
            if not discard(slot, None):
                return None
        if not wait_keeper_gone(slot, 0):
            return None
        if reason is None:
            ended = store.read_ended(slot).get("reason", "")
            noted = ("service died", "never became ready", "corrupt record: discarded")
            reason = next((why for why in noted if ended.startswith(why.split(":")[0])), None)
            reason = reason or self._supersede(name, key) or "no kept service yet"
        return self._start(slot, name, key, concurrent, reason, start)

    def _alive(self, slot: str, record: store.Record) -> bool:
        return (
            leases.is_held(os.path.join(slot, store.KEEPER_LOCK))
            and store.is_running(record.keeper_pid, record.keeper_since)
            and all(store.is_running(p.pid, p.since) for p in record.processes)
        )

    def _supersede(self, name: str, key: str) -> Optional[str]:
        """ "key changed" when a copy of ``name`` for this checkout has another key; such
        copies that no run uses are stopped."""
        found = None
        for other_key, slot in store.all_slots(self.root):
            if other_key == key:
                continue
            record, _ = store.read_record(slot, other_key)
            if record is None or record.name != name or record.rootdir != self.rootdir:
                continue
            found = "key changed"
            lock = leases.try_lock(os.path.join(slot, store.SLOT_LOCK))
            if lock is None:
                continue
            try:
                if not leases.live_marks(self.root, slot):
                    store.remove(slot, store.RECORD)
                    signal_keeper(record)
                    self._log.info("stopped kept service %s of key %s", name, other_key)
            finally:
                os.close(lock)
        return found

    def _start(
        self, slot: str, name: str, key: str, concurrent: bool, reason: str, start: StartIn
    ) -> Outcome:
        store.reset_slot(slot)
        leases.sweep_runs(self.root)
        data = os.path.join(slot, store.DATA)
        logs = os.path.join(slot, store.LOGS)
        for folder in (data, logs):
            os.makedirs(folder, mode=0o700, exist_ok=True)
        ports = KeptPorts(self.lock_dir, self.port_range)
        processes: list[ServiceProcess] = []
        try:
            outcome, processes = start(data, logs, ports)
            if "value" not in outcome:
                if "error" in outcome:
                    store.write_json(slot, store.ENDED, {"reason": "never became ready"})
                    why = "never became ready"
                else:
                    why = "skipped"
                self.reports.append(KeptReport(name, key, "not kept", why))
                return outcome
            record = store.Record(
                key=key,
                name=name,
                rootdir=self.rootdir,
                concurrent=concurrent,
                created=time.time(),
                value=outcome["value"],
                keeper_pid=0,
                keeper_since=0,
                processes=[_process(p) for p in processes],
                ports=list(ports.ports),
            )

            def write(keeper_pid: int, keeper_since: int) -> None:
                record.keeper_pid, record.keeper_since = keeper_pid, keeper_since
                leases.mark(slot, self.run_id, self.minutes * 60)
                store.write_record(slot, record)

            hand_over(
                root=self.root,
                slot=slot,
                key=key,
                processes=processes,
                tables=[ports.table.fd],
                idle=self.minutes * 60,
                grace=max((p.grace for p in processes), default=5.0),
                record=write,
            )
        except BaseException:
            for process in reversed(processes):
                process.stop()
            raise
        finally:
            ports.close()
        for process in processes:
            _reaper.forget(process.pgid)  # the keeper has them now
        self.reports.append(KeptReport(name, key, "started", reason, self.minutes))
        return {**outcome, "services": describe(record), "kept": "started"}

    def close(self) -> None:
        """End this process's lease: the keepers' idle timers start."""
        self.lease.release()


def _process(process: ServiceProcess) -> store.Process:
    log = os.fspath(process.log_path) if process.log_path is not None else None
    since = store.process_since(process.pid) or 0
    tag = process.services_tag
    return store.Process(process.name, process.pid, since, tag, process.command, log)


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
