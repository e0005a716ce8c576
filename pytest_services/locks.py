"""Ports and X displays that no two sessions or workers of the user on the host share.

Each reserved resource is an exclusive ``flock`` (through portalocker) on its own file in
``lock_dir``, held by the process that uses the resource.  The kernel drops the lock when
that process dies, so a crashed session can never block or leak a port or a display; there
is no registry to clean up.  The module functions of pytest-services 2.2 keep their
signatures and meaning on top of this.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from logging import Logger
from typing import IO, Any

import portalocker
import pytest

from pytest_services.folders import StrPath, private_dir

#: Where Linux keeps the kernel's ephemeral (client) port range.
PORT_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
#: Ports below this are left to well-known services.
LOWEST_PORT = 10000
#: X displays handed out: ``FIRST_DISPLAY`` up to ``FIRST_DISPLAY + DISPLAY_COUNT - 1``.
FIRST_DISPLAY = 100
DISPLAY_COUNT = 2000
#: X server lock and socket of display N.
X_LOCK = "/tmp/.X{0}-lock"
X_SOCKET = "/tmp/.X11-unix/X{0}"
#: How many candidates ``lock_resource`` tries before giving up.
MAX_CANDIDATES = 5000

#: Lock file descriptors of the resources this process holds, by (lock_dir, name, resource),
#: and the same resources by (lock_dir, name).
_held: dict[tuple[str, str, Any], int] = {}
_held_by_kind: dict[tuple[str, str], set[Any]] = {}
_held_guard = threading.Lock()


class LockError(Exception):
    """A lock could not be taken, or no free resource was found."""


_known_dirs: set[str] = set()


def _ensure_lock_dir(lock_dir: StrPath) -> None:
    """Create and check ``lock_dir`` once per process (again if it disappears)."""
    path = os.fspath(lock_dir)
    if path not in _known_dirs or not os.path.isdir(path):
        private_dir(path)
        _known_dirs.add(path)


# -- single lock files -------------------------------------------------------------------------


_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_LOCK_FLAGS = portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING


def _open_lock_file(path: str) -> int:
    try:
        fd = os.open(path, _OPEN_FLAGS, 0o600)
    except OSError as exc:
        raise LockError(
            f"Cannot open the lock file {path}: {exc.strerror}. "
            "Check that it is a regular file you may write, or remove it."
        ) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LockError(f"The lock file {path} is not a regular file; remove it.")
    return fd


def _still_linked(fd: int, path: str) -> bool:
    """Tell whether ``path`` is still the file ``fd`` has open (not removed or replaced)."""
    try:
        on_disk = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


def _try_lock(path: str) -> int | None:
    """Take the exclusive lock on ``path`` if nobody holds it; never waits.

    Returns the open file descriptor that holds the lock, or None when it is taken.
    """
    while True:
        fd = _open_lock_file(path)
        try:
            portalocker.lock(fd, _LOCK_FLAGS)
        except portalocker.AlreadyLocked:
            os.close(fd)
            return None
        except portalocker.LockException as exc:
            os.close(fd)
            raise LockError(f"Cannot lock {path}: {exc}") from exc
        if _still_linked(fd, path):
            return fd
        os.close(fd)  # its holder removed it as we opened it: lock the new file


def _release(fd: int, path: str, remove: bool) -> None:
    if remove:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still locked, so nobody can lock the removed file
    os.close(fd)


@contextlib.contextmanager
def file_lock(filename: StrPath, remove: bool = True, timeout: float = 20) -> Iterator[IO[str]]:
    """Hold an exclusive lock on ``filename``, waiting up to ``timeout`` s; yields the open file.

    The file is opened for reading and writing at its start; with ``remove`` it is deleted
    when the lock is released.
    """
    path = os.fspath(filename)
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        fd = _try_lock(path)
        if fd is not None:
            break
        if time.monotonic() >= deadline:
            raise LockError(
                f"Timed out after {timeout:g} s waiting for the lock file {path}: another "
                f"process holds it{_holder_hint(path)}."
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    handle = os.fdopen(fd, "r+", closefd=False)
    try:
        yield handle
    finally:
        with contextlib.suppress(OSError, ValueError):
            handle.close()  # flushes what the caller wrote
        _release(fd, path, remove)


def _holder_hint(path: str) -> str:
    try:
        with open(path) as lock_file:
            owner = lock_file.read(200).strip()
    except OSError:
        return ""
    return f" ({owner})" if owner else ""


# -- resources: ports, displays, anything named ------------------------------------------------


def _resource_path(name: str, resource: object, lock_dir: StrPath) -> str:
    return os.path.join(os.fspath(lock_dir), f"{name}-{resource}.lock")


def _take(name: str, resource: Any, lock_dir: StrPath) -> bool:
    path = _resource_path(name, resource, lock_dir)
    kind = (os.fspath(lock_dir), name)
    with _held_guard:
        if (*kind, resource) in _held:
            return False
        fd = _try_lock(path)
        if fd is None:
            return False
        if os.fstat(fd).st_size:
            os.ftruncate(fd, 0)  # costly on some file systems even when empty: only if needed
        os.write(fd, f"held by pid {os.getpid()}\n".encode())
        _held[(*kind, resource)] = fd
        _held_by_kind.setdefault(kind, set()).add(resource)
        return True


def _is_taken(name: str, resource: Any, lock_dir: StrPath) -> bool:
    """Tell whether some process (this one included) holds ``resource``; takes no lock."""
    if (os.fspath(lock_dir), name, resource) in _held:
        return True
    path = _resource_path(name, resource, lock_dir)
    if not os.path.exists(path):
        return False
    fd = _try_lock(path)
    if fd is None:
        return True
    os.close(fd)
    return False


@contextlib.contextmanager
def locked_resources(
    name: str, lock_dir: StrPath, lock_resource_timeout: float = 20
) -> Iterator[list[Any]]:
    """Yield the list of ``name`` resources held on the host; apply changes made to it.

    Resources appended to the list are reserved for this process, removed ones that this
    process holds are released.  The list is read and applied under one lock.
    """
    _ensure_lock_dir(lock_dir)
    with file_lock(os.path.join(os.fspath(lock_dir), f"{name}.lock"), False, lock_resource_timeout):
        prefix, suffix = f"{name}-", ".lock"
        found = []
        for entry in sorted(os.listdir(lock_dir)):
            if entry.startswith(prefix) and entry.endswith(suffix):
                value = _parse(entry[len(prefix) : -len(suffix)])
                if _is_taken(name, value, lock_dir):
                    found.append(value)
        resources = list(found)
        yield resources
        for value in resources:
            if value not in found and not _take(name, value, lock_dir):
                raise LockError(f"Cannot reserve {name} {value}: another process holds it.")
        for value in found:
            if value not in resources:
                _drop(name, value, lock_dir)


def _parse(text: str) -> Any:
    return int(text) if text.isdigit() else text


def _drop(name: str, resource: Any, lock_dir: StrPath) -> bool:
    kind = (os.fspath(lock_dir), name)
    with _held_guard:
        fd = _held.pop((*kind, resource), None)
        _held_by_kind.get(kind, set()).discard(resource)
    if fd is None:
        return False
    _release(fd, _resource_path(name, resource, lock_dir), remove=True)
    return True


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
    _ensure_lock_dir(lock_dir)
    deadline = time.monotonic() + lock_resource_timeout
    taken: list[Any] = list(_held_by_kind.get((os.fspath(lock_dir), name), ()))
    for _ in range(MAX_CANDIDATES):
        resource = resource_getter(taken)
        if resource not in taken:
            if _take(name, resource, lock_dir):
                services_log.debug("reserved %s %s", name, resource)
                return resource
            taken.append(resource)
        if time.monotonic() > deadline:
            break
    raise LockError(
        f"No free {name} found in {lock_dir} after trying {len(taken)} "
        f"({lock_resource_timeout:g} s timeout); the last was "
        f"{_resource_path(name, resource, lock_dir)}."
    )


def unlock_resource(name: str, resource: Any, lock_dir: StrPath, services_log: Logger) -> None:
    """Release a resource reserved by :func:`lock_resource`."""
    if _drop(name, resource, lock_dir):
        services_log.debug("released %s %s", name, resource)


# -- ports ---------------------------------------------------------------------------------


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's ephemeral port range (the Linux default when it cannot be read)."""
    return _read_port_range(PORT_RANGE_FILE)


@functools.lru_cache(maxsize=4)
def _read_port_range(path: str) -> tuple[int, int]:
    try:
        with open(path) as range_file:
            low, high = (int(part) for part in range_file.read().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def candidate_ports() -> list[range]:
    """Port ranges outside the ephemeral range that the plugin hands out."""
    low, high = ephemeral_port_range()
    ranges = [range(LOWEST_PORT, min(low, 65536)), range(max(high + 1, LOWEST_PORT), 65536)]
    return [r for r in ranges if len(r)]


def port_binds(port: int) -> bool:
    """Tell whether a TCP socket can bind ``127.0.0.1:port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def get_free_port(
    lock_dir: StrPath, services_log: Logger, lock_resource_timeout: float = 20
) -> int:
    """Reserve a port that binds on 127.0.0.1, outside the kernel's ephemeral range."""
    ranges = candidate_ports()
    total = sum(len(r) for r in ranges)
    if not total:
        low, high = ephemeral_port_range()
        raise LockError(
            f"No port is left to hand out: the ephemeral range {low}-{high} "
            f"(from {PORT_RANGE_FILE}) covers every port from {LOWEST_PORT} up."
        )

    def propose(taken: list[Any]) -> int:
        for _ in range(64):
            index = random.randrange(total)
            for port_range in ranges:
                if index < len(port_range):
                    port = port_range[index]
                    break
                index -= len(port_range)
            if port not in taken and port_binds(port):
                return port
            taken.append(port)
        if len(set(taken)) >= total:
            raise LockError(f"Every port in {_describe(ranges)} is taken or does not bind.")
        return port

    port: int = lock_resource("port", propose, lock_dir, services_log, lock_resource_timeout)
    return port


def _describe(ranges: list[range]) -> str:
    return ", ".join(f"{r.start}-{r.stop - 1}" for r in ranges)


def unlock_port(port: int, lock_dir: StrPath, services_log: Logger) -> None:
    """Release a port reserved by :func:`get_free_port`."""
    unlock_resource("port", port, lock_dir, services_log)


# -- X displays ----------------------------------------------------------------------------


def display_in_use(display: int) -> bool:
    """Tell whether an X server holds ``display``: its lock, its sockets or its TCP port.

    A lock file left by an X server that died (its pid is gone) does not count: X servers
    replace such stale locks themselves.
    """
    if _x_lock_alive(display) or os.path.lexists(X_SOCKET.format(display)):
        return True
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.bind("\0" + X_SOCKET.format(display))  # the abstract socket X servers add
        except OSError:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", 6000 + display))
        except OSError:
            return True
    return False


def x_lock_holder(display: int) -> int | None:
    """The running process that holds ``/tmp/.X{display}-lock``: its pid, or None.

    None when there is no lock file or the process it names is gone (a stale lock);
    :class:`ValueError` when the lock file cannot be read or holds no pid.
    """
    try:
        with open(X_LOCK.format(display), "rb") as lock:
            pid = int(lock.read(64).strip())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"cannot read {X_LOCK.format(display)}: {exc}") from exc
    if pid <= 0:
        raise ValueError(f"{X_LOCK.format(display)} holds no pid")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # another user's process
    return pid


def _x_lock_alive(display: int) -> bool:
    try:
        return x_lock_holder(display) is not None
    except ValueError:
        return True  # unreadable or odd: leave that display alone


def get_free_display(
    lock_dir: StrPath, services_log: Logger, lock_resource_timeout: float = 20
) -> int:
    """Reserve an X display number that no X server and no other session uses."""
    last = FIRST_DISPLAY + DISPLAY_COUNT - 1

    def propose(taken: list[Any]) -> int:
        for display in range(FIRST_DISPLAY, last + 1):
            if display not in taken:
                if not display_in_use(display):
                    return display
                taken.append(display)
        raise LockError(f"No free X display between :{FIRST_DISPLAY} and :{last}.")

    display: int = lock_resource("display", propose, lock_dir, services_log, lock_resource_timeout)
    return display


def unlock_display(display: int, lock_dir: StrPath, services_log: Logger) -> None:
    """Release a display reserved by :func:`get_free_display`."""
    unlock_resource("display", display, lock_dir, services_log)


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

    def get_port() -> int:
        port = get_free_port(lock_dir, services_log, lock_resource_timeout)
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
