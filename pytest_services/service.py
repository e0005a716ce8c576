"""Which session this is, whether services run, and ``watcher_getter`` to start any binary."""

from __future__ import annotations

import os
import re
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from logging import Logger
from typing import Any, Optional, Protocol

import pytest

from pytest_services import _reaper, folders
from pytest_services.options import run_services_option
from pytest_services.process import (
    DEFAULT_GRACE,
    ServiceProcess,
    ServiceStartError,
    StrPath,
    start_service,
)

_UNSAFE = re.compile(r"[^\w-]")
#: Name and scope of the fixture whose ``request`` started each running service, by pid.
_owners: dict[int, tuple[Optional[str], str]] = {}


class ServicesWarning(pytest.PytestWarning):
    """A warning about how pytest-services is used."""


class WatcherGetter(Protocol):
    """The function returned by the ``watcher_getter`` fixture."""

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
    ) -> ServiceProcess: ...


def is_xdist_worker(config: pytest.Config) -> bool:
    """Tell whether this pytest process is a pytest-xdist worker."""
    return hasattr(config, "workerinput")


def get_worker_id(config: pytest.Config) -> str:
    """The xdist worker id (``gw0``...), or ``local``; safe in file names."""
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})
    return _UNSAFE.sub("_", str(workerinput.get("workerid", "local")))


def services_enabled(config: pytest.Config) -> bool:
    """Tell whether services run: in xdist workers, or with ``--run-services`` or its ini."""
    return is_xdist_worker(config) or run_services_option(config)


def service_owner(process: ServiceProcess) -> tuple[Optional[str], str]:
    """Name (None for a test) and scope of the fixture that started ``process``."""
    return _owners.get(process.pid, (None, "session"))


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
    session_request = request
    logs = folders.log_dir(base_dir)
    if request.getfixturevalue("run_services"):
        _reaper.start()  # now, so that the first service does not wait for it

    def getter(
        name: StrPath,
        arguments: Optional[Sequence[StrPath]] = None,
        kwargs: Optional[Mapping[str, Any]] = None,
        timeout: float = 20,
        checker: Optional[Callable[[], object]] = None,
        request: Optional[pytest.FixtureRequest] = None,
        *,
        grace: float = DEFAULT_GRACE,
    ) -> ServiceProcess:
        if request is None:
            warnings.warn(
                f"watcher_getter({os.fspath(name)!r}) was called without request=request; "
                "the service will stop at the end of the session. Pass the request of the "
                "fixture that starts it.",
                ServicesWarning,
                stacklevel=2,
            )
            request = session_request
        services_log.debug("starting %s %s", name, list(arguments or ()))
        process = start_keeping_logs(
            name, arguments, kwargs, timeout=timeout, checker=checker, grace=grace, logs=logs
        )
        services_log.debug("%s is ready, pid %d", process.name, process.pid)
        _owners[process.pid] = (request.fixturename, request.scope)

        def stop() -> None:
            _owners.pop(process.pid, None)
            process.stop()
            services_log.debug("stopped %s, pid %d", process.name, process.pid)

        request.addfinalizer(stop)
        return process

    return getter
