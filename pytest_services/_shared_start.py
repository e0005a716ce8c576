"""Running a shared service's start function within its timeout.

Python cannot interrupt a call that hangs, so the start function runs on a thread of its own
and the worker waits for it at most ``timeout`` seconds.  When that passes, the worker gives
up: it refuses every later start of that function's ``watcher_getter`` and stops what the
function started, including a service it is still waiting for; the thread is left to end on
its own (a daemon thread: it never holds up the worker's exit).  Nothing here needs pytest.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pytest_services.exceptions import StartTimedOut
from pytest_services.process import ServiceProcess, running_services

Result = TypeVar("Result")


class Started:
    """What one start function started, until the worker gives up on it."""

    def __init__(self) -> None:
        self.processes: list[ServiceProcess] = []
        self.closed = False
        self._lock = threading.Lock()
        self._before = set(running_services())

    def add(self, process: ServiceProcess) -> bool:
        """Record ``process``; False (and the process stopped) once the worker gave up."""
        with self._lock:
            if not self.closed:
                self.processes.append(process)
                return True
        process.stop(grace=min(process.grace, 1.0))
        return False

    def close(self) -> None:
        """Give up: refuse what comes later, and stop what was started or is starting now."""
        with self._lock:
            self.closed = True
            processes = list(self.processes)
        # A service still waiting for its checker is running but was not handed back yet.
        processes += [p for p in running_services() if p not in self._before and p not in processes]
        for process in reversed(processes):
            process.stop(grace=min(process.grace, 1.0))


def call_within(function: Callable[[], Result], timeout: float) -> Result:
    """``function()``, run on a thread; :class:`StartTimedOut` if it takes over ``timeout`` s.

    What it raises is raised here, pytest's outcomes (skip, fail) included.
    """
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, function()))
        except BaseException as exc:  # handed to the waiting thread, which raises it
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name="shared-service-start", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise StartTimedOut
    done, value = outcome[0]
    if not done:
        raise value
    result: Result = value
    return result
