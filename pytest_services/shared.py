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
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_services import _remote_services, folders
from pytest_services._engine import reaper as _reaper
from pytest_services._engine.paths import KEEP_LOGS, LOGS, StrPath
from pytest_services._keep.lookup import KeptServices
from pytest_services._keep_options import kept_services
from pytest_services._run_keeper import (
    KeeperClient,
    Outcome,
    RunKeeper,
)
from pytest_services._shared_call import RunWatcherGetter, StartFunction, call_start, kept_outcome
from pytest_services.exceptions import (
    KeeperError,
    ServicesWarning,
    SharedServiceError,
)
from pytest_services.log import get_logger
from pytest_services.process import (
    ServiceProcess,
)
from pytest_services.service import (
    get_worker_id,
    is_xdist_worker,
)

__all__ = [
    "SharedServiceError",
    "shared_service",
]

#: The key of ``workerinput`` under which the controller names the keeper of the run.
RUN_KEY = "pytest_services_run"


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
        kept: KeptServices | None = None,
    ) -> None:
        self._keeper = keeper
        self._kept = kept
        self._worker = f"{worker} (pid {os.getpid()})"
        self._root_dir = os.fspath(root_dir)
        self._base_dir = base_dir
        self._lock_dir = lock_dir
        self._port_getter = port_getter
        self._outcomes: dict[str, Outcome] = {}
        self._causes: dict[str, BaseException] = {}
        self._own: list[ServiceProcess] = []

    def get(
        self,
        name: str,
        start: StartFunction,
        timeout: float = 60,
        key: object = None,
        concurrent: bool = False,
    ) -> Any:
        """The value of shared service ``name``, running ``start`` if nobody has yet."""
        outcome = self._outcomes.get(name)
        keep = (self._kept, key, concurrent, self._worker, self._causes)
        if outcome is None:
            if self._keeper is None:
                outcome = kept_outcome(name, start, timeout, *keep)
                if outcome is None:  # not kept: this process's own
                    outcome = self._start_here(name, start, timeout)
            else:
                outcome = self._keeper.claim(name, timeout)
                if outcome.get("start"):
                    kept = kept_outcome(name, start, timeout, *keep, run=self._keeper)
                    outcome = kept or self._start_for_run(self._keeper, name, start, timeout)
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

    def _start_here(self, name: str, start: StartFunction, timeout: float) -> Outcome:
        folder = tempfile.mkdtemp(prefix="shared-", dir=self._base_dir)
        getter = RunWatcherGetter(folder, folders.log_dir(self._base_dir))
        outcome, started = call_start(
            name, start, getter, self._port_getter, timeout, self._worker, self._causes
        )
        self._own.extend(started)
        return outcome

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
            outcome, started = call_start(
                name,
                start,
                getter,
                lambda: keeper.port(self._lock_dir),
                timeout,
                self._worker,
                self._causes,
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


class SharedServiceGetter:
    """What the ``shared_service`` fixture returns: call it as
    ``shared_service(name, start, *, timeout=60, key=None, concurrent=False)``.

    The process's :class:`SharedServices` are made at the first call, so that a session
    whose tests never ask for a shared service connects to nothing.
    """

    def __init__(self, enabled: bool, make: Callable[[], SharedServices]) -> None:
        self._enabled = enabled
        self._make = make
        self._services: SharedServices | None = None

    def __call__(
        self,
        name: str,
        start: StartFunction,
        *,
        timeout: float = 60,
        key: object = None,
        concurrent: bool = False,
    ) -> Any:
        if not self._enabled:
            return None
        if self._services is None:
            self._services = self._make()
        return self._services.get(name, start, timeout, key, concurrent)

    def close(self) -> None:
        """Stop what this process started itself, or leave the run's services to the run."""
        if self._services is not None:
            self._services.close()


@pytest.fixture(scope="session")
def shared_service(
    request: pytest.FixtureRequest,
    root_dir: StrPath,
    base_dir: str,
    lock_dir: str,
    port_getter: Callable[[], int],
) -> Iterator[SharedServiceGetter]:
    """Function ``(name, start, *, timeout=60, key=None, concurrent=False)``: one service
    for all xdist workers of a run, kept between runs with ``--services-keep``."""

    def make() -> SharedServices:
        return SharedServices(
            keeper=_connect(request.config),
            worker=get_worker_id(request.config),
            root_dir=root_dir,
            base_dir=base_dir,
            lock_dir=lock_dir,
            port_getter=port_getter,
            kept=kept_services(request.config),
        )

    getter = SharedServiceGetter(bool(request.getfixturevalue("run_services")), make)
    yield getter
    getter.close()


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
