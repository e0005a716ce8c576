"""Which session this is, whether services run, and ``watcher_getter`` to start any binary."""

from __future__ import annotations

import os
import re
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from logging import Logger
from typing import Any, Optional

import pytest

from pytest_services import folders
from pytest_services._engine import reaper as _reaper
from pytest_services._engine.paths import StrPath
from pytest_services._options import run_services_option
from pytest_services.exceptions import (
    ServiceStartError,
    ServicesWarning,
)
from pytest_services.process import (
    DEFAULT_GRACE,
    ServiceProcess,
    start_service,
)

__all__ = [
    "ServicesWarning",
    "WatcherGetter",
    "get_worker_id",
    "is_xdist_worker",
    "run_services",
    "session_id",
    "slave_id",
    "watcher_getter",
    "worker_id",
]

_UNSAFE = re.compile(r"[^\w-]")
#: Name and scope of the fixture whose ``request`` started each running service, by pid.
_owners: dict[int, tuple[Optional[str], str]] = {}
#: The fixtures that reach the service another fixture starts, by that fixture's name.
_reached: dict[str, set[str]] = {}


class WatcherGetter:
    """Starts a binary and waits until its checker passes: what ``watcher_getter`` returns.

    A call takes the arguments of pytest-services 2.2's ``watcher_getter`` and returns the
    running :class:`~pytest_services.process.ServiceProcess`.  Subclasses say who owns what
    it started (:meth:`_owner`, :meth:`_started`); its output goes to the folder ``logs``.
    """

    def __init__(self, logs: StrPath) -> None:
        self._logs = logs

    def __call__(
        self,
        name: StrPath,
        arguments: Optional[Sequence[StrPath]] = None,
        kwargs: Optional[Mapping[str, Any]] = None,
        timeout: float = 20,
        checker: Optional[Callable[[], object]] = None,
        request: Optional[pytest.FixtureRequest] = None,
        *,
        grace: float = DEFAULT_GRACE,
    ) -> ServiceProcess:
        owner = self._owner(name, request)
        process = start_keeping_logs(
            name, arguments, kwargs, timeout=timeout, checker=checker, grace=grace, logs=self._logs
        )
        self._started(process, owner)
        return process

    def adopt(
        self, process: ServiceProcess, request: Optional[pytest.FixtureRequest] = None
    ) -> ServiceProcess:
        """Take charge of ``process``, started and ready already, as if this call had
        started it: it stops with ``request``'s fixture, and its output goes to reports."""
        self._started(process, self._owner(process.name, request))
        return process

    def _owner(
        self, name: StrPath, request: Optional[pytest.FixtureRequest]
    ) -> Optional[pytest.FixtureRequest]:
        """The request whose finalizer stops the service (None: the owner stops it)."""
        return request

    def _started(self, process: ServiceProcess, owner: Optional[pytest.FixtureRequest]) -> None:
        raise NotImplementedError


class _SessionWatcherGetter(WatcherGetter):
    """Each service stops with the fixture whose ``request`` started it."""

    def __init__(self, logs: StrPath, session_request: pytest.FixtureRequest, log: Logger) -> None:
        super().__init__(logs)
        self._session_request = session_request
        self._log = log

    def _owner(
        self, name: StrPath, request: Optional[pytest.FixtureRequest]
    ) -> pytest.FixtureRequest:
        if request is None:
            warnings.warn(
                f"watcher_getter({os.fspath(name)!r}) was called without request=request; "
                "the service will stop at the end of the session. Pass the request of the "
                "fixture that starts it.",
                ServicesWarning,
                stacklevel=3,
            )
            request = self._session_request
        self._log.debug("starting %s", os.fspath(name))
        return request

    def _started(self, process: ServiceProcess, owner: Optional[pytest.FixtureRequest]) -> None:
        assert owner is not None
        self._log.debug("%s is ready, pid %d", process.name, process.pid)
        _owners[process.pid] = (owner.fixturename, owner.scope)
        log = self._log

        def stop() -> None:
            _owners.pop(process.pid, None)
            process.stop()
            log.debug("stopped %s, pid %d", process.name, process.pid)

        owner.addfinalizer(stop)


def is_xdist_worker(config: pytest.Config) -> bool:
    """Tell whether this pytest process is a pytest-xdist worker."""
    return hasattr(config, "workerinput")


def get_worker_id(config: pytest.Config) -> str:
    """The xdist worker id (``gw0``...), or ``local``; safe in file names."""
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})
    return _UNSAFE.sub("_", str(workerinput.get("workerid", "local")))


def get_run_id(config: pytest.Config) -> str:
    """An id that every pytest-xdist worker of one run shares (the session's own outside
    pytest-xdist): what a build that failed in this run is remembered by."""
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})
    if "testrunuid" in workerinput:
        return str(workerinput["testrunuid"])
    if not hasattr(config, "_pytest_services_run_id"):
        config._pytest_services_run_id = uuid.uuid4().hex  # type: ignore[attr-defined]
    return str(config._pytest_services_run_id)  # type: ignore[attr-defined]


def services_enabled(config: pytest.Config) -> bool:
    """Tell whether services run: in xdist workers, with ``--run-services`` or its ini, and
    in a ``--services-prepare`` run."""
    return (
        is_xdist_worker(config)
        or run_services_option(config)
        or bool(config.getoption("services_prepare", False))
    )


def service_owner(process: ServiceProcess) -> tuple[Optional[str], str]:
    """Name (None for a test) and scope of the fixture that started ``process``."""
    return _owners.get(process.pid, (None, "session"))


def reached_through(owner: str, fixture: str) -> None:
    """Say that the fixture ``fixture`` uses the service the fixture ``owner`` starts
    without requesting it (through ``request.getfixturevalue``): a test that uses
    ``fixture`` errs too once that service died."""
    _reached.setdefault(owner, set()).add(fixture)


def fixtures_reaching(owner: Optional[str]) -> set[str]:
    """The fixtures that use the service ``owner`` starts: itself, and those
    :func:`reached_through` named."""
    return {owner} | _reached.get(owner, set()) if owner is not None else set()


def set_owner(process: ServiceProcess, fixture: Optional[str], scope: str) -> None:
    """Record the fixture that ``process`` serves: a test that needs it errs once it died."""
    _owners[process.pid] = (fixture, scope)


@pytest.fixture(scope="session")
def run_services(request: pytest.FixtureRequest) -> bool:
    """True when services should start: in xdist workers or with ``--run-services``."""
    return services_enabled(request.config)


@pytest.fixture(scope="session")
def worker_id(request: pytest.FixtureRequest) -> str:
    """The pytest-xdist worker id (``gw0``, ``gw1``...), or ``local`` outside workers."""
    return get_worker_id(request.config)


@pytest.fixture(scope="session")
def slave_id(request: pytest.FixtureRequest) -> str:
    """Deprecated alias of ``worker_id``."""
    warnings.warn(
        "The 'slave_id' fixture is deprecated; use 'worker_id' instead.",
        pytest.PytestDeprecationWarning,
        stacklevel=2,
    )
    return get_worker_id(request.config)


@pytest.fixture(scope="session")
def session_id(request: pytest.FixtureRequest) -> str:
    """A globally unique id of this session; it ends with the worker id."""
    return f"{uuid.uuid4().hex}-{get_worker_id(request.config)}"


def start_keeping_logs(
    name: StrPath,
    arguments: Optional[Sequence[StrPath]],
    kwargs: Optional[Mapping[str, Any]],
    *,
    timeout: float,
    checker: Optional[Callable[[], object]],
    grace: float,
    logs: StrPath,
) -> ServiceProcess:
    """:func:`start_service` with its output in ``logs``, a folder kept after the session if
    the start fails (the error names a log there)."""
    try:
        return start_service(
            name, arguments, kwargs, timeout=timeout, checker=checker, log_dir=logs, grace=grace
        )
    except ServiceStartError as error:
        if error.log_path is not None:
            folders.keep_logs(logs)
        raise


@pytest.fixture(scope="session")
def watcher_getter(
    request: pytest.FixtureRequest, base_dir: str, services_log: Logger
) -> WatcherGetter:
    """Function that starts a binary, waits until its checker passes, and stops it later."""
    if request.getfixturevalue("run_services"):
        _reaper.start()  # now, so that the first service does not wait for it
    return _SessionWatcherGetter(folders.log_dir(base_dir), request, services_log)
