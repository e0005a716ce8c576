"""Locks that no two sessions or workers share, and the 2.2 functions built on them.

Every reservation is a kernel lock held by the process that uses the resource: the kernel
drops it when that process dies, so a crashed session never blocks or leaks anything and
there is no registry to clean up.  Ports and X displays are reserved host-wide (see
:mod:`pytest_services._reserve.ports` and :mod:`pytest_services._reserve.displays`); other
named resources in the user's ``lock_dir``.  The module functions of pytest-services 2.2
keep their signatures and meaning on top of this.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from logging import Logger
from typing import Any

import pytest

from pytest_services._engine.paths import StrPath
from pytest_services._options import port_range_option
from pytest_services._reserve import registry as _registry
from pytest_services._reserve.displays import (
    DISPLAY_COUNT,
    FIRST_DISPLAY,
    X_LOCK,
    X_SOCKET,
    display_in_use,
    get_free_display,
    unlock_display,
    x_lock_holder,
)
from pytest_services._reserve.lockfiles import file_lock
from pytest_services._reserve.ports import (
    LOWEST_PORT,
    PORT_RANGE_FILE,
    candidate_ports,
    ephemeral_port_range,
    get_free_port,
    port_binds,
    unlock_port,
)
from pytest_services.exceptions import LockError

__all__ = [
    "DISPLAY_COUNT",
    "FIRST_DISPLAY",
    "LOWEST_PORT",
    "PORT_RANGE_FILE",
    "X_LOCK",
    "X_SOCKET",
    "LockError",
    "candidate_ports",
    "display_getter",
    "display_in_use",
    "ephemeral_port_range",
    "file_lock",
    "get_free_display",
    "get_free_port",
    "lock_resource",
    "lock_resource_timeout",
    "locked_resources",
    "port_binds",
    "port_getter",
    "unlock_display",
    "unlock_port",
    "unlock_resource",
    "x_lock_holder",
]

#: How many candidates ``lock_resource`` tries before giving up.
MAX_CANDIDATES = 5000


@contextlib.contextmanager
def locked_resources(
    name: str, lock_dir: StrPath, lock_resource_timeout: float = 20
) -> Iterator[list[Any]]:
    """Yield the list of ``name`` resources held on the host; apply changes made to it.

    Resources appended to the list are reserved for this process, removed ones that this
    process holds are released.  The list is read and applied under one lock.
    """
    _registry.ensure_lock_dir(lock_dir)
    with file_lock(os.path.join(os.fspath(lock_dir), f"{name}.lock"), False, lock_resource_timeout):
        found = _registry.taken(name, lock_dir)
        resources = list(found)
        yield resources
        for value in resources:
            if value not in found and not _registry.take(name, value, lock_dir):
                raise LockError(f"Cannot reserve {name} {value}: another process holds it.")
        for value in found:
            if value not in resources:
                _registry.drop(name, value, lock_dir)


def lock_resource(
    name: str,
    resource_getter: Callable[[list[Any]], Any],
    lock_dir: StrPath,
    services_log: Logger,
    lock_resource_timeout: float = 20,
) -> Any:
    """Reserve a resource proposed by ``resource_getter(taken)`` that nobody else holds.

    ``resource_getter`` receives the resources found taken so far and proposes another;
    the search ends with :class:`LockError` after ``lock_resource_timeout`` seconds.
    """
    _registry.ensure_lock_dir(lock_dir)
    deadline = time.monotonic() + lock_resource_timeout
    taken: list[Any] = sorted(_registry.held(name, lock_dir), key=str)
    for _ in range(MAX_CANDIDATES):
        resource = resource_getter(taken)
        if resource not in taken:
            if _registry.take(name, resource, lock_dir):
                services_log.debug("reserved %s %s", name, resource)
                return resource
            taken.append(resource)
        if time.monotonic() > deadline:
            break
    raise LockError(
        f"No free {name} found after trying {len(taken)} ({lock_resource_timeout:g} s "
        f"timeout); the last one proposed was {resource!r}."
    )


def unlock_resource(name: str, resource: Any, lock_dir: StrPath, services_log: Logger) -> None:
    """Release a resource reserved by :func:`lock_resource`."""
    if _registry.drop(name, resource, lock_dir):
        services_log.debug("released %s %s", name, resource)


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def lock_resource_timeout() -> float:
    """Seconds to wait for a lock before giving up (default 20)."""
    return 20


@pytest.fixture(scope="session")
def port_getter(
    request: pytest.FixtureRequest,
    lock_dir: str,
    services_log: Logger,
    lock_resource_timeout: float,
) -> Iterator[Callable[[], int]]:
    """Function returning a free 127.0.0.1 port reserved for this session."""
    ports: list[int] = []
    port_range = port_range_option(request.config)

    def get_port() -> int:
        port = get_free_port(lock_dir, services_log, lock_resource_timeout, port_range=port_range)
        ports.append(port)
        return port

    yield get_port
    for port in ports:
        unlock_port(port, lock_dir, services_log)


@pytest.fixture(scope="session")
def display_getter(
    request: pytest.FixtureRequest,
    lock_dir: str,
    services_log: Logger,
    lock_resource_timeout: float,
) -> Iterator[Callable[[], int]]:
    """Function returning a free X display number reserved for this session."""
    displays: list[int] = []

    def get_display() -> int:
        display = get_free_display(lock_dir, services_log, lock_resource_timeout)
        displays.append(display)
        return display

    yield get_display
    for display in displays:
        unlock_display(display, lock_dir, services_log)
