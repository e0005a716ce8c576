"""``shared_service``: one service for a whole pytest-xdist run, owned by the run, not a worker.

Outside pytest-xdist, ``shared_service(name, start)`` calls ``start`` once per session and
stops what it started when the session ends.  Under pytest-xdist the controller holds a
:class:`~pytest_services._run_keeper.RunKeeper` and tells every worker how to reach it; the
first worker that asks for a name runs ``start``, hands the process groups it started to the
keeper and publishes the value (or the error); every other worker gets that outcome from the
keeper.  The services then live until the controller ends the run, or dies.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional, Protocol

import pytest

from pytest_services import _remote_services, folders
from pytest_services._engine import reaper as _reaper
from pytest_services._engine.paths import KEEP_LOGS, LOGS, StrPath
from pytest_services._run_keeper import (
    KeeperClient,
    Outcome,
    RunKeeper,
)
from pytest_services._shared_start import Started, call_within
from pytest_services.exceptions import (
    KeeperError,
    ServicesWarning,
    SharedServiceError,
    StartTimedOut,
)
from pytest_services.log import get_logger
from pytest_services.process import (
    ServiceProcess,
)
from pytest_services.service import (
    WatcherGetter,
    get_worker_id,
    is_xdist_worker,
    set_owner,
)

__all__ = [
    "SharedServiceError",
    "shared_service",
]

#: The key of ``workerinput`` under which the controller names the keeper of the run.
RUN_KEY = "pytest_services_run"

#: ``start(watcher_getter, port_getter)``: starts the service, returns a JSON-serialisable value.
StartFunction = Callable[["RunWatcherGetter", Callable[[], int]], Any]


class SharedServiceGetter(Protocol):
    """The function returned by the ``shared_service`` fixture."""

    def __call__(self, name: str, start: StartFunction, *, timeout: float = 60) -> Any: ...


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


class SharedServices:
    """The shared services one pytest process asked for: started here, or got from the run.

    With ``keeper`` None they are this process's own and :meth:`close` stops them; with a
    keeper they belong to the run.
    """

    def __init__(
        self,
        *,
        keeper: KeeperClient | None,
        worker: str,
        root_dir: StrPath,
        base_dir: str,
        lock_dir: str,
        port_getter: Callable[[], int],
    ) -> None:
        self._keeper = keeper
        self._worker = f"{worker} (pid {os.getpid()})"
        self._root_dir = os.fspath(root_dir)
        self._base_dir = base_dir
        self._lock_dir = lock_dir
        self._port_getter = port_getter
        self._outcomes: dict[str, Outcome] = {}
        self._causes: dict[str, BaseException] = {}
        self._own: list[ServiceProcess] = []

    def get(self, name: str, start: StartFunction, timeout: float = 60) -> Any:
        """The value of shared service ``name``, running ``start`` if nobody has yet."""
        outcome = self._outcomes.get(name)
        if outcome is None:
            if self._keeper is None:
                folder = tempfile.mkdtemp(prefix="shared-", dir=self._base_dir)
                getter = RunWatcherGetter(folder, folders.log_dir(self._base_dir))
                outcome, started = self._run(name, start, getter, self._port_getter, timeout)
                self._own.extend(started)
            else:
                outcome = self._keeper.claim(name, timeout)
                if outcome.get("start"):
                    outcome = self._start_for_run(self._keeper, name, start, timeout)
                elif "value" in outcome:  # another worker's processes: watched through /proc
                    _remote_services.watch(name, outcome.get("services", []))
            if "waiting" not in outcome:
                self._outcomes[name] = outcome
        if "value" in outcome:
            return outcome["value"]
        if "skip" in outcome:
            pytest.skip(outcome["skip"])
        if "waiting" in outcome:
            raise SharedServiceError(
                f"Shared service {name!r} was not ready after {timeout:g} s: worker "
                f"{outcome['waiting']} is still running its start function. If it needs "
                f"longer, pass a larger timeout: shared_service({name!r}, start, timeout=...)."
            )
        raise SharedServiceError(outcome["error"]) from self._causes.get(name)

    def close(self) -> None:
        """Stop the services this process started for itself; leave the run's alone."""
        while self._own:
            self._own.pop().stop()
        if self._keeper is not None:
            self._keeper.close()

    def _start_for_run(
        self, keeper: KeeperClient, name: str, start: StartFunction, timeout: float
    ) -> Outcome:
        folder = tempfile.mkdtemp(prefix="pytest-services-shared-", dir=self._root_dir)
        _reaper.watch_folder(folder)  # until the run's keeper has it
        logs = Path(folder, LOGS)
        try:
            getter = RunWatcherGetter(folder, logs)
            outcome, started = self._run(
                name, start, getter, lambda: keeper.port(self._lock_dir), timeout
            )
        except BaseException:  # interrupted: the others must not wait for this worker
            with contextlib.suppress(KeeperError):
                error = f"Shared service {name!r}: its start function was interrupted."
                keeper.finish(name, {"error": error}, [])
            raise
        if "value" not in outcome:
            if not Path(logs, KEEP_LOGS).exists():
                shutil.rmtree(folder, ignore_errors=True)
            _reaper.forget_folder(folder)  # removed, or kept for the log its error names
            keeper.finish(name, outcome, [])
            return outcome
        outcome["services"] = [_remote_services.describe(process) for process in started]
        try:
            tags = {process.pgid: process.services_tag for process in started}
            keeper.finish(name, outcome, list(tags), folder, tags)
        except KeeperError:
            for process in reversed(started):
                process.stop()
            raise
        # The run's watchdog has them now; this worker's must not touch them when it ends.
        for process in started:
            _reaper.forget(process.pgid)
        _reaper.forget_folder(folder)
        return outcome

    def _run(
        self,
        name: str,
        start: StartFunction,
        watcher_getter: RunWatcherGetter,
        port_getter: Callable[[], int],
        timeout: float,
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
                    f"start function, run by worker {self._worker}, had not returned by then, "
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
            self._causes[name] = exc
            text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return {
                "error": f"Shared service {name!r} failed to start in worker {self._worker}:\n"
                + "\n".join(f"  {line}" for line in text.splitlines())
            }, []
        finally:
            if not done:  # failed, skipped or interrupted: nothing it started may stay
                for process in reversed(started):
                    process.stop()


def _connect(config: pytest.Config) -> KeeperClient | None:
    """The connection to the keeper of this xdist run; None outside xdist or out of reach."""
    if not is_xdist_worker(config):
        return None
    worker = get_worker_id(config)
    run: dict[str, Any] | None = config.workerinput.get(RUN_KEY)  # type: ignore[attr-defined]
    try:
        if run is None:
            raise KeeperError(
                "The pytest-xdist controller named no keeper for this run: is pytest-services "
                "installed where the controller runs?"
            )
        return KeeperClient(str(run["id"]), int(run["pid"]), worker)
    except KeeperError as exc:
        warnings.warn(
            f"{exc} Shared services start in each worker that needs them.",
            ServicesWarning,
            stacklevel=3,
        )
        return None


@pytest.fixture(scope="session")
def shared_service(
    request: pytest.FixtureRequest,
    root_dir: StrPath,
    base_dir: str,
    lock_dir: str,
    port_getter: Callable[[], int],
) -> Iterator[SharedServiceGetter]:
    """Function ``(name, start, *, timeout=60)``: one service for all xdist workers of a run."""
    enabled = bool(request.getfixturevalue("run_services"))
    services: SharedServices | None = None

    def get(name: str, start: StartFunction, *, timeout: float = 60) -> Any:
        nonlocal services
        if not enabled:
            return None
        if services is None:
            services = SharedServices(
                keeper=_connect(request.config),
                worker=get_worker_id(request.config),
                root_dir=root_dir,
                base_dir=base_dir,
                lock_dir=lock_dir,
                port_getter=port_getter,
            )
        return services.get(name, start, timeout)

    yield get
    if services is not None:
        services.close()


class RunKeeperPlugin:
    """Hooks of the pytest-xdist controller: one keeper per run, named to every worker."""

    def __init__(self) -> None:
        self.keeper: RunKeeper | None = None

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        if self.keeper is None:
            self.keeper = RunKeeper(uuid.uuid4().hex, log=get_logger())
        node.workerinput[RUN_KEY] = {"id": self.keeper.run_id, "pid": self.keeper.pid}

    @pytest.hookimpl(tryfirst=True)
    def pytest_unconfigure(self) -> None:
        # After the last worker finished; before the watchdog is closed.
        if self.keeper is not None:
            self.keeper.close()
            self.keeper = None
