"""A private Redis (or Valkey) per session (and xdist worker), on a unix socket, in memory.

The plain functions and classes here describe the server -- which binary, where its socket
and data live, its command line, how to tell that it is the one answering, how to empty
it -- and work without pytest; the fixtures hand them to ``watcher_getter``.  The client
library, redis-py, is optional and imported only by the ``redis_client`` fixture; starting
and cleaning speak the protocol themselves.
"""

from __future__ import annotations

import importlib
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Optional

import pytest

from pytest_services._engine import ledger
from pytest_services._engine.paths import StrPath, private_dir, socket_path
from pytest_services._resp import ReplyError, RespConnection, encode_command
from pytest_services.exceptions import ServiceError
from pytest_services.process import ServiceProcess, find_executable, find_program
from pytest_services.service import WatcherGetter

__all__ = [
    "PACKAGE",
    "SERVERS",
    "SERVER_VARIABLE",
    "RedisCleaner",
    "RedisPing",
    "do_redis_clean",
    "find_redis_server",
    "redis",
    "redis_args",
    "redis_arguments",
    "redis_clean",
    "redis_client",
    "redis_socket",
    "redis_socket_path",
    "redis_url",
]

#: The executables tried in turn, and the Debian package that provides the first.
SERVERS = ("redis-server", "valkey-server")
PACKAGE = "redis-server"
#: Environment variable naming the server binary (a name on PATH or a path) explicitly.
SERVER_VARIABLE = "PYTEST_SERVICES_REDIS_SERVER"
#: File name of the socket inside ``run_dir``, and of the data folder in ``memory_temp_dir``.
SOCKET_NAME = "redis.sock"
DATA_NAME = "redis"
#: Seconds one request to the server may take before it counts as not answering.
REQUEST_TIMEOUT = 1.0


def redis_socket_path(run_dir: StrPath) -> str:
    """Return the path of the Redis socket in ``run_dir``."""
    return socket_path(run_dir, SOCKET_NAME)


def find_redis_server(environ: Mapping[str, str] = os.environ) -> str:
    """Return the server binary: the one ``PYTEST_SERVICES_REDIS_SERVER`` names, else
    ``redis-server`` or ``valkey-server`` on PATH; raise an error naming the package."""
    named = environ.get(SERVER_VARIABLE, "").strip()
    if named:
        try:
            return find_executable(named)
        except ServiceError as exc:
            raise ServiceError(
                f"{SERVER_VARIABLE}={named!r} names no server to run: {exc}"
            ) from exc
    try:
        return find_program(SERVERS, PACKAGE)
    except ServiceError as exc:
        raise ServiceError(f"{exc} (or set {SERVER_VARIABLE} to the server's path)") from None


def redis_arguments(socket: str, data_dir: str, extra: Sequence[StrPath] = ()) -> list[StrPath]:
    """Return the options that make the server serve only ``socket``, keep its data in
    memory in ``data_dir`` and persist nothing, followed by ``extra`` (which win)."""
    if isinstance(extra, (str, bytes, os.PathLike)):
        raise TypeError(
            f"redis_args must be a list of options, such as ['--maxmemory', '64mb'], "
            f"not the {type(extra).__name__} {extra!r}."
        )
    return [
        *("--port", "0"),  # no TCP listener; a later --port in extra asks for one
        *("--unixsocket", socket, "--unixsocketperm", "700"),
        *("--save", "", "--appendonly", "no"),  # nothing written to disk
        *("--dir", data_dir),
        *("--daemonize", "no", "--logfile", ""),  # the log goes to stdout, which is captured
        *extra,  # checked by the engine, which names anything but a str or a path
    ]


class RedisPing:
    """Readiness check: ``PING`` answered with ``PONG`` on the socket, by the process that
    the engine started (the socket's peer credentials carry its pid), not by another one.

    The engine calls :meth:`attach` with the process before the first check; until
    then, no answer counts.
    """

    #: Each call waits at most ``timeout`` for the server: the engine may call it directly.
    bounded = True

    def __init__(self, path: str, timeout: float = REQUEST_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self.pid: Optional[int] = None
        self.answer = "no connection yet"

    def attach(self, process: subprocess.Popen[Any]) -> None:
        """Expect the server to be ``process``."""
        self.pid = process.pid

    def __call__(self) -> bool:
        if self.pid is None:
            self.answer = "no process to expect (attach was not called)"
            return False
        try:
            with RespConnection(self.path, self.timeout) as connection:
                peer = connection.peer_pid()
                if peer is not None and peer != self.pid:
                    self.answer = f"answered by pid {peer}, not by the server started here"
                    return False
                reply = connection.command("PING")
        except ReplyError as exc:  # -LOADING and the like: up, but not serving yet
            self.answer = f"error reply {exc}"
            return False
        except OSError as exc:
            self.answer = f"no answer ({exc})"
            raise  # the usual "not ready yet" of the engine
        if reply != b"PONG":
            self.answer = f"answered {reply!r} to PING"
            return False
        self.answer = "PONG"
        return True

    def __repr__(self) -> str:
        return f"redis_ping({self.path}, pid {self.pid}: {self.answer})"


_FLUSHALL = encode_command("FLUSHALL")


class RedisCleaner:
    """Empties the server on ``path`` with ``FLUSHALL``, over one connection kept open
    between calls (and opened again once if the server closed it)."""

    def __init__(self, path: str, timeout: float = REQUEST_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self._connection: Optional[RespConnection] = None

    def flush_all(self) -> None:
        """Drop every key of every database."""
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = RespConnection(self.path, self.timeout)
            try:
                reply = self._connection.request(_FLUSHALL)
                break
            except (OSError, ReplyError) as exc:
                self.close()
                if attempt == 2:
                    raise ServiceError(
                        f"The Redis server on {self.path} did not empty itself: FLUSHALL got "
                        f"no answer within {self.timeout:g} s, twice ({exc})."
                        if isinstance(exc, BlockingIOError)
                        else f"The Redis server on {self.path} did not empty itself: {exc}"
                    ) from exc
        if reply != b"OK":
            raise ServiceError(f"The Redis server on {self.path} answered {reply!r} to FLUSHALL.")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


@pytest.fixture(scope="session")
def redis_socket(run_services: bool, run_dir: str) -> Optional[str]:
    """Path of the unix socket of this session's Redis server."""
    return redis_socket_path(run_dir) if run_services else None


@pytest.fixture(scope="session")
def redis_args() -> list[str]:
    """Extra options for this session's ``redis-server``; override to add some, such as
    ``["--maxmemory", "64mb"]`` (or ``["--port", str(port_getter())]`` for TCP)."""
    return []


@pytest.fixture(scope="session")
def redis(
    request: pytest.FixtureRequest,
    run_services: bool,
    redis_socket: Optional[str],
    redis_args: Sequence[StrPath],
    memory_temp_dir: str,
    watcher_getter: WatcherGetter,
) -> Optional[ServiceProcess]:
    """This session's Redis server process, on ``redis_socket`` only, persisting nothing."""
    if not run_services or redis_socket is None:
        return None
    data_dir = private_dir(os.path.join(memory_temp_dir, DATA_NAME))
    return watcher_getter(
        find_redis_server(),
        redis_arguments(redis_socket, data_dir, redis_args),
        checker=RedisPing(redis_socket),
        request=request,
        grace=0,  # nothing is persisted: no graceful exit to wait for
    )


@pytest.fixture(scope="session")
def redis_url(redis: Optional[ServiceProcess], redis_socket: Optional[str]) -> Optional[str]:
    """URL of database 0 of this session's Redis (``unix:///...?db=0``), for ``from_url``."""
    return f"unix://{redis_socket}?db=0" if redis is not None else None


@pytest.fixture(scope="session")
def redis_client(run_services: bool, redis_url: Optional[str]) -> Iterator[Any]:
    """A ``redis.Redis`` client connected to this session's Redis, database 0."""
    if not run_services or redis_url is None:
        yield None
        return
    try:
        # By name at run time: this module is called redis too, and redis-py is optional.
        client_library = importlib.import_module("redis")
    except ImportError:
        pytest.skip("redis-py is not installed: pip install 'pytest-services[redis]'")
    client = client_library.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def _redis_cleaner(
    redis: Optional[ServiceProcess], redis_socket: Optional[str]
) -> Iterator[Optional[RedisCleaner]]:
    """The connection that ``redis_clean`` empties the server through."""
    if redis is None or redis_socket is None:
        yield None
        return
    cleaner = RedisCleaner(redis_socket)
    yield cleaner
    cleaner.close()


@pytest.fixture(scope="session")
def do_redis_clean(run_services: bool) -> bool:
    """Whether ``redis_clean`` empties Redis before a test; defaults to ``run_services``."""
    return run_services


@pytest.fixture
def redis_clean(
    do_redis_clean: bool, _redis_cleaner: Optional[RedisCleaner], redis: Optional[ServiceProcess]
) -> None:
    """Empty this session's Redis (``FLUSHALL``) before the test, unless ``do_redis_clean``
    is false."""
    if do_redis_clean and _redis_cleaner is not None and redis is not None:
        with ledger.timed_reset(redis.name):
            _redis_cleaner.flush_all()
