"""The keeper of one kept service: a small process that outlives the runs that use it.

:func:`pytest_services._keep.handover.hand_over` starts it in a session of its own, with a
pidfd of each of the service's process group leaders and the lock tables that hold its
ports; it reads its settings as one JSON line on stdin, forks once more (so that no pytest
has to reap it), takes the slot's ``keeper.lock``, answers ``ready PID SINCE`` and then:

* stops the service -- SIGTERM, SIGKILL after the grace -- and exits when no run has held a
  lease on it for its idle timeout (it decides that under the slot's lock, so that a run
  looking it up at that moment never gets a service that is being stopped);
* ends at once, noting why in ``ended.json`` and keeping the logs, when one of the service's
  processes ends;
* stops it when asked with SIGTERM (``--services-stop``) or when its record was removed or
  names another keeper (a lookup found it corrupt).

Its pidfds make every signal safe: a group is signalled only while its leader, held by the
pidfd, lives; what left the group is found by its ``PYTEST_SERVICES_TAG``.  Exiting drops
its locks, and with the lock tables the reservations of the service's ports.  Only the
standard library is imported.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import selectors
import shutil
import signal
import sys
import time
from typing import Any

from pytest_services._engine.reaper import tagged_processes
from pytest_services._keep import leases, store

#: Why a copy ended that the next lookup reports (with the logs kept).
NOTED = ("service died", "corrupt record")
#: Seconds within which the run that started the keeper says it wrote its record.
RECORD_DEADLINE = 60.0


class _Service:
    def __init__(self, item: dict[str, Any]) -> None:
        self.fd = int(item["fd"])
        self.pid = int(item["pid"])
        self.tag = str(item["tag"])
        self.name = str(item["name"])

    def exited(self) -> bool:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return bool(poller.poll(0))

    def signal(self, signum: int) -> None:
        if not self.exited():  # the pidfd holds the leader: its pid is still its group's
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.fd, signum)
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signum)
        for pid in tagged_processes({self.tag}):
            with contextlib.suppress(OSError):
                os.kill(pid, signum)

    def alive(self) -> bool:
        return not self.exited() or bool(tagged_processes({self.tag}))


def stop(services: list[_Service], grace: float) -> None:
    """SIGTERM every group and what carries its tag; SIGKILL what is left after ``grace``."""
    for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for service in services:
            service.signal(signum)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(service.alive() for service in services):
            time.sleep(0.02)


class Keeper:
    def __init__(self, config: dict[str, Any]) -> None:
        self.root = str(config["root"])
        self.slot = str(config["slot"])
        self.key = str(config["key"])
        self.grace = float(config["grace"])
        self.idle = float(config["idle"])
        self.services = [_Service(item) for item in config["services"]]
        self.pid = os.getpid()
        self.since = store.process_since(self.pid) or 0
        self.stop_requested = False
        self._record_stat: tuple[int, int] | None = None

    def run(self) -> str:
        """Keep the service until there is a reason to stop it; return that reason."""
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGTERM, self._on_term)
        selector = selectors.DefaultSelector()
        selector.register(wake_read, selectors.EVENT_READ, None)
        for service in self.services:
            selector.register(service.fd, selectors.EVENT_READ, service)
        last_used = time.monotonic()
        while True:
            tick = min(1.0, max(0.05, self.idle / 20))
            for key, _ in selector.select(tick):
                if key.data is None:
                    os.read(wake_read, 512)
                else:
                    return f"service died: {key.data.name} (pid {key.data.pid}) ended"
            if self.stop_requested:
                return "stopped (--services-stop)"
            problem = self._record_problem()
            if problem:
                return problem
            marks = leases.live_marks(self.root, self.slot)
            if marks:
                last_used = time.monotonic()
                self.idle = max(marks.values()) or self.idle
                store.touch_used(self.slot)
            elif time.monotonic() - last_used >= self.idle and self._expire():
                return "idle"

    def _on_term(self, signum: int, frame: object) -> None:
        self.stop_requested = True

    def _record_problem(self) -> str | None:
        path = os.path.join(self.slot, store.RECORD)
        try:
            info = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return "record removed"
        signature = (info.st_ino, info.st_mtime_ns)
        if signature == self._record_stat:
            return None
        self._record_stat = signature
        record, _ = store.read_record(self.slot, self.key)
        if record is None:
            return "corrupt record: discarded"
        if (record.keeper_pid, record.keeper_since) != (self.pid, self.since):
            return "record names another keeper"
        return None

    def _expire(self) -> bool:
        """Under the slot's lock: no lease yet, so the record goes; tell whether it did."""
        fd = leases.try_lock(os.path.join(self.slot, store.SLOT_LOCK))
        if fd is None:
            return False  # a run is looking it up: it may well lease it
        try:
            if leases.live_marks(self.root, self.slot):
                return False
            self._remove_own_record()
            return True
        finally:
            os.close(fd)

    def _remove_own_record(self) -> None:
        record, _ = store.read_record(self.slot, self.key)
        if record is not None and (record.keeper_pid, record.keeper_since) == (
            self.pid,
            self.since,
        ):
            store.remove(self.slot, store.RECORD)

    def finish(self, reason: str) -> None:
        """Stop the service and clear the slot; a death is noted, with the logs kept."""
        stop(self.services, self.grace)
        self._remove_own_record()
        logs = os.path.join(self.slot, store.LOGS)
        if reason.startswith(NOTED):
            shutil.rmtree(os.path.join(self.slot, store.DATA), ignore_errors=True)
            shutil.rmtree(os.path.join(self.slot, leases.LEASES), ignore_errors=True)
            store.write_json(self.slot, store.ENDED, {"reason": reason, "logs": logs})
        else:
            store.reset_slot(self.slot)
        _log(f"{reason}: stopped")


def _log(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} keeper {os.getpid()}: {message}\n")
        sys.stderr.flush()


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_IGN)
    config = json.loads(sys.stdin.readline())
    if os.fork():
        os._exit(0)  # the starting pytest reaps this one; the keeper is nobody's child
    keeper = Keeper(config)
    lock = leases.try_lock(os.path.join(keeper.slot, store.KEEPER_LOCK))
    if lock is None:
        print("busy", flush=True)
        os._exit(3)
    print(f"ready {keeper.pid} {keeper.since}", flush=True)
    recorded = select.select([0], [], [], RECORD_DEADLINE)[0] and sys.stdin.readline()
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    _log(f"keeping {keeper.slot} for {keeper.idle:g} s after its last use")
    try:
        if recorded != "recorded\n":
            reason = "the run that started it ended before it recorded it"
        else:
            reason = keeper.run()
    except BaseException as exc:  # whatever went wrong, the service must not be left behind
        reason = f"keeper error {type(exc).__name__}: {exc}"
    keeper.finish(reason)
    os.close(lock)


if __name__ == "__main__":
    main()
