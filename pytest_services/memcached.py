"""A private memcached per session (and xdist worker), reachable only over a unix socket.

The plain functions here describe the server -- where its socket lives, its command line,
how to tell that it answers -- and work without pytest; the fixtures hand them to
``watcher_getter``.  The client library, pylibmc, is optional and imported only by the
``memcached_client`` fixture.
"""

from __future__ import annotations

import os
import pwd
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pytest_services._engine import ledger
from pytest_services._engine.paths import socket_path
from pytest_services._engine.readiness import bounded
from pytest_services.exceptions import ServiceError
from pytest_services.process import (
    ServiceProcess,
    find_program,
)
from pytest_services.service import WatcherGetter

__all__ = [
    "do_memcached_clean",
    "find_memcached",
    "flush_all",
    "memcached",
    "memcached_arguments",
    "memcached_checker",
    "memcached_clean",
    "memcached_client",
    "memcached_connection",
    "memcached_socket",
    "memcached_socket_path",
    "memcached_version",
]

#: The executable, and the Debian package that provides it.
MEMCACHED = "memcached"
PACKAGE = "memcached"
#: File name of the socket inside ``run_dir``.
SOCKET_NAME = "memcached.sock"
#: Seconds one request to the server may take before it counts as not answering.
REQUEST_TIMEOUT = 1.0


def memcached_socket_path(run_dir: str) -> str:
    """Return the path of the memcached socket in ``run_dir``."""
    return socket_path(run_dir, SOCKET_NAME)


def find_memcached() -> str:
    """Return the full path of the memcached binary, or raise an error naming its package."""
    return find_program(MEMCACHED, PACKAGE)


def memcached_arguments(path: str) -> list[str]:
    """Return the arguments that make memcached serve only the socket ``path``, for us alone."""
    # -s turns off TCP; -U 0 states that UDP stays off too.  -a 0700: only our user connects.
    arguments = ["-s", path, "-a", "0700", "-U", "0"]
    if os.geteuid() == 0:
        # memcached refuses to run as root without -u.  Another user could neither create
        # the socket in our private folder nor be reached through it, so stay who we are.
        arguments += ["-u", _user_name()]
    return arguments


def memcached_version(path: str, timeout: float = REQUEST_TIMEOUT) -> str:
    """Ask the server on ``path`` for its version; raise ``OSError`` if it does not answer."""
    reply = _request(path, b"version", timeout)
    if not reply.startswith(b"VERSION "):
        raise ConnectionError(f"Unexpected answer to 'version' on {path}: {reply!r}")
    return reply[len(b"VERSION ") :].decode(errors="replace")


def memcached_checker(path: str) -> Callable[[], bool]:
    """Return a readiness check: true once the server answers ``version`` on ``path``."""

    @bounded  # each request has a timeout
    def answers_version() -> bool:
        try:
            memcached_version(path)
        except OSError:
            return False
        return True

    return answers_version


def flush_all(path: str, timeout: float = REQUEST_TIMEOUT) -> None:
    """Drop every item stored in the server on ``path``."""
    reply = _request(path, b"flush_all", timeout)
    if reply != b"OK":
        raise ServiceError(f"memcached on {path} answered {reply!r} to 'flush_all'.")


def _request(path: str, command: bytes, timeout: float) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(path)
        conn.sendall(command + b"\r\n")
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = conn.recv(4096)
            if not chunk:
                raise ConnectionError(f"memcached on {path} closed the connection.")
            data += chunk
    return data[:-2]


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return "root"


@pytest.fixture(scope="session")
def memcached_socket(run_services: bool, run_dir: str) -> str | None:
    """Path of the unix socket of this session's memcached."""
    return memcached_socket_path(run_dir) if run_services else None


@pytest.fixture(scope="session")
def memcached(
    request: pytest.FixtureRequest,
    run_services: bool,
    memcached_socket: str | None,
    watcher_getter: WatcherGetter,
) -> ServiceProcess | None:
    """This session's memcached process, listening on ``memcached_socket`` only."""
    if not run_services or memcached_socket is None:
        return None
    return watcher_getter(
        find_memcached(),
        memcached_arguments(memcached_socket),
        checker=memcached_checker(memcached_socket),
        request=request,
        grace=0,  # memcached keeps nothing worth a graceful exit
    )


@pytest.fixture(scope="session")
def memcached_connection(
    memcached: ServiceProcess | None, memcached_socket: str | None
) -> str | None:
    """Address of this session's memcached for clients: its socket path, as pylibmc takes it."""
    return memcached_socket if memcached is not None else None


@pytest.fixture(scope="session")
def memcached_client(run_services: bool, memcached_connection: str | None) -> Iterator[Any]:
    """A ``pylibmc.Client`` connected to this session's memcached."""
    if not run_services or memcached_connection is None:
        yield None
        return
    try:
        import pylibmc
    except ImportError:
        pytest.skip("pylibmc is not installed: pip install 'pytest-services[memcached]'")
    client = pylibmc.Client([memcached_connection])
    yield client
    client.disconnect_all()


@pytest.fixture(scope="session")
def do_memcached_clean(run_services: bool) -> bool:
    """Whether ``memcached_clean`` empties memcached before a test; defaults to ``run_services``."""
    return run_services


@pytest.fixture
def memcached_clean(
    do_memcached_clean: bool, memcached: ServiceProcess | None, memcached_socket: str | None
) -> None:
    """Empty this session's memcached before the test, unless ``do_memcached_clean`` is false."""
    if do_memcached_clean and memcached is not None and memcached_socket is not None:
        with ledger.timed_reset(memcached.name):
            flush_all(memcached_socket)
