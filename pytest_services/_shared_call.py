"""Calling a shared service's start function, and the ``watcher_getter`` it gets.

:func:`call_start` runs ``start(watcher_getter, port_getter)`` within its timeout and turns
what happens into the outcome every worker gets: the JSON value it returned, the error that
stopped it (with what it started stopped too), or a skip.  Shared services of one run and
kept services (``--services-keep``) are started through it alike.
"""

from __future__ import annotations

import contextlib
import json
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import pytest

from pytest_services import __version__, _remote_services
from pytest_services._engine.paths import StrPath
from pytest_services._keep.handover import KeptPorts
from pytest_services._keep.lookup import KeptServices
from pytest_services._keep.store import service_key
from pytest_services._run_keeper import KeeperClient
from pytest_services._shared_start import Started, call_within
from pytest_services.exceptions import KeeperError, SharedServiceError, StartTimedOut
from pytest_services.process import ServiceProcess
from pytest_services.service import WatcherGetter, set_owner

Outcome = dict[str, Any]
#: ``start(watcher_getter, port_getter)``: starts the service, returns a JSON-serialisable value.
StartFunction = Callable[["RunWatcherGetter", Callable[[], int]], Any]


class RunWatcherGetter(WatcherGetter):
    """The ``watcher_getter`` a start function gets: what it starts belongs to the run.

    It takes the arguments of the ``watcher_getter`` fixture; ``request`` is ignored, since
    the services live until the run (outside pytest-xdist: the session) ends.  ``folder`` is
    a private folder that lives as long, for the services' data.
    """

    def __init__(self, folder: str, logs: Path) -> None:
        super().__init__(logs)
        self.folder = folder
        self.record = Started()
        self.started: list[ServiceProcess] = self.record.processes

    def _owner(
        self, name: StrPath, request: Optional[pytest.FixtureRequest]
    ) -> Optional[pytest.FixtureRequest]:
        return None

    def _started(self, process: ServiceProcess, owner: Optional[pytest.FixtureRequest]) -> None:
        if not self.record.add(process):
            raise SharedServiceError(
                f"{process.name!r} was started after its start function timed out; stopped it."
            )
        set_owner(process, "shared_service", "session")  # its death refuses what needs it


def call_start(
    name: str,
    start: StartFunction,
    watcher_getter: RunWatcherGetter,
    port_getter: Callable[[], int],
    timeout: float,
    worker: str,
    causes: dict[str, BaseException],
) -> tuple[Outcome, list[ServiceProcess]]:
    """Call ``start`` for at most ``timeout`` s; stop what it started if it fails."""
    started = watcher_getter.started
    done = False
    try:
        try:
            value = call_within(lambda: start(watcher_getter, port_getter), timeout)
        except pytest.skip.Exception as exc:
            return {"skip": exc.msg}, []
        except StartTimedOut:
            watcher_getter.record.close()
            return {
                "error": f"Shared service {name!r} was not ready after {timeout:g} s: its "
                f"start function, run by worker {worker}, had not returned by then, "
                "and what it started was stopped. If it needs longer, pass a larger "
                f"timeout: shared_service({name!r}, start, timeout=...)."
            }, []
        try:
            # What every worker gets, so the starter gets exactly that too.
            outcome = {"value": json.loads(json.dumps(value))}
        except (TypeError, ValueError) as exc:
            raise SharedServiceError(
                f"The start function of shared service {name!r} returned {value!r}, which "
                f"is not JSON-serialisable ({exc}). Return what tests need to reach the "
                'service, e.g. {"url": "http://127.0.0.1:10873"}.'
            ) from exc
        done = True
        return outcome, started
    except (Exception, pytest.fail.Exception) as exc:
        causes[name] = exc
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return {
            "error": f"Shared service {name!r} failed to start in worker {worker}:\n"
            + "\n".join(f"  {line}" for line in text.splitlines())
        }, []
    finally:
        if not done:  # failed, skipped or interrupted: nothing it started may stay
            for process in reversed(started):
                process.stop()


def kept_outcome(
    name: str,
    start: StartFunction,
    timeout: float,
    kept: Optional[KeptServices],
    key: object,
    concurrent: bool,
    worker: str,
    causes: dict[str, BaseException],
    run: Optional[KeeperClient] = None,
) -> Optional[Outcome]:
    """The outcome of ``name`` as a kept service (``--services-keep``); None when it is not
    kept (keeping is off, or every copy is in use by other runs).  Under pytest-xdist the
    outcome is published to the ``run`` for the other workers."""
    if kept is None:
        return None
    digest = service_key(name, start, key, concurrent, __version__, kept.rootdir)

    def start_in(data: str, logs: str, ports: KeptPorts) -> tuple[Outcome, list[ServiceProcess]]:
        getter = RunWatcherGetter(data, Path(logs))
        return call_start(name, start, getter, ports, timeout, worker, causes)

    try:
        outcome = kept.get(name, digest, concurrent, timeout, start_in)
    except BaseException:
        if run is not None:  # the others must not wait for this worker
            with contextlib.suppress(KeeperError):
                error = f"Shared service {name!r}: keeping it failed in worker {worker}."
                run.finish(name, {"error": error}, [])
        raise
    if outcome is None:
        return None
    if outcome.get("kept") == "reused":  # not this process's children: watched through /proc
        _remote_services.watch(name, outcome["services"])
    if run is not None:
        run.finish(name, outcome, [])  # the keeper, not the run, owns its processes
    return outcome
