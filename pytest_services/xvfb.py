"""Xvfb, the virtual X server: one authenticated display per session or pytest-xdist worker.

The server never runs with ``-ac``.  Each start gets a fresh random MIT-MAGIC-COOKIE-1,
written with ``xauth`` to an Xauthority file private to the session and exported as
``XAUTHORITY``, so both the unix socket and TCP on ``127.0.0.1:6000+N`` ask for it.
Xvfb is ready when it accepts an X11 connection setup with that cookie on its unix socket;
the check blocks on the server's answer instead of sleeping.  ``-displayfd`` is not used:
it makes Xvfb skip its ``/tmp/.X{N}-lock`` file, which other X servers go by.  ``-noreset``
spares the server a full reset each time its last client disconnects.

Nothing but the fixtures at the bottom needs pytest: :func:`start_xvfb` does the work for
any function with the shape of ``watcher_getter``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import socket
import struct
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Optional, Protocol

import pytest

from pytest_services.displays import X_LOCK, X_SOCKET, x_lock_holder
from pytest_services.options import xvfb_display_option
from pytest_services.process import (
    CalledProcessWithOutputError,
    ServiceError,
    ServiceProcess,
    ServiceStartError,
    StrPath,
    check_output,
    find_program,
)
from pytest_services.service import WatcherGetter

#: Width, height and depth of the screen unless ``xvfb_resolution`` is overridden.
DEFAULT_RESOLUTION = (1366, 768, 8)
#: Seconds Xvfb gets to exit on SIGTERM, removing its lock file and socket, before SIGKILL.
XVFB_GRACE = 2.0
#: Longest wait for the server's answer to one connection setup.
HANDSHAKE_TIMEOUT = 1.0
COOKIE_PROTOCOL = "MIT-MAGIC-COOKIE-1"

_OPTION = re.compile(r"^([-+][\w-]+)", re.MULTILINE)


class XvfbError(ServiceError):
    """Xvfb or xauth is missing, or Xvfb could not serve the display."""


class Starter(Protocol):
    """What :func:`start_xvfb` calls to run Xvfb: ``watcher_getter`` with its request bound."""

    def __call__(
        self,
        name: StrPath,
        arguments: Optional[Sequence[StrPath]],
        kwargs: Optional[Mapping[str, Any]],
        *,
        timeout: float,
        checker: Callable[[], object],
        grace: float,
    ) -> ServiceProcess: ...


@functools.cache
def xvfb_options(executable: str) -> frozenset[str]:
    """The options that this Xvfb binary lists in its ``-help`` output (asked once)."""
    try:
        result = subprocess.run(
            [executable, "-help"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise XvfbError(f"Cannot run {executable} -help: {exc}") from exc
    return frozenset(_OPTION.findall(result.stdout.decode(errors="replace")))


def xvfb_arguments(
    display: int,
    resolution: Sequence[int],
    xauthority: StrPath,
    *,
    listen_tcp: bool = True,
    options: frozenset[str] = frozenset(),
) -> list[str]:
    """Xvfb's arguments: the display, its screen, the cookie file and the listeners."""
    width, height, depth = _checked_resolution(resolution)
    arguments = [
        f":{display}",
        "-screen", "0", f"{width}x{height}x{depth}",
        "+extension", "RANDR",
        "-auth", os.fspath(xauthority),
        "-noreset",
    ]  # fmt: skip
    if not listen_tcp:
        arguments += ["-nolisten", "tcp"]
    elif "-listen" in options:
        arguments += ["-listen", "tcp"]  # an Xvfb without -listen listens on TCP anyway
    return arguments


def _checked_resolution(resolution: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(resolution)
    if len(values) != 3 or not all(isinstance(v, int) and v > 0 for v in values):
        raise XvfbError(
            f"Invalid xvfb_resolution {resolution!r}: give (width, height, depth), "
            f"e.g. {DEFAULT_RESOLUTION}."
        )
    return values[0], values[1], values[2]


def write_xauthority(path: StrPath, display: int, cookie: str, xauth: str = "xauth") -> None:
    """Write a user-only Xauthority file at ``path`` holding ``cookie`` for ``display``.

    ``xauth add :N`` files the cookie under this host's name for display N; X clients use
    that entry for the unix socket and for TCP to a loopback address alike.
    """
    text = os.fspath(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(text)
    os.close(os.open(text, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        check_output([xauth, "-f", text, "add", f":{display}", ".", cookie])
    except (OSError, CalledProcessWithOutputError) as exc:
        raise XvfbError(f"xauth could not write the cookie to {text}: {exc}") from exc
    os.chmod(text, 0o600)


class X11Handshake:
    """Readiness check: an X11 connection setup with the cookie on the display's unix socket.

    True once the server accepts the cookie.  Until Xvfb listens, connecting fails and the
    check says "not yet"; once connected, the reply arrives the moment the server is up (or
    the connection drops if it dies), so the check needs no sleeping of its own.  A server
    that does not lead a process group started by this process (another X server already on
    the display) never counts as ready, even if it lets anyone in.
    """

    def __init__(self, display: int, cookie: str, timeout: float = HANDSHAKE_TIMEOUT) -> None:
        self.path = X_SOCKET.format(display)
        self.request = _setup_request(bytes.fromhex(cookie))
        self.timeout = timeout
        self.answer = "no connection yet"

    def __call__(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.path)
                peer = _peer_pid(sock)
                if peer is not None and not _started_here(peer):
                    self.answer = f"answered by pid {peer}, an X server this process did not start"
                    return False
                sock.sendall(self.request)
                head = _receive(sock, 8)
                if head[0] == 1:
                    self.answer = "accepted"
                    return True
                reason = _receive(sock, struct.unpack_from("<H", head, 6)[0] * 4)
        except OSError as exc:
            self.answer = f"no answer ({exc})"
            raise  # the usual "not ready yet" of the engine
        if head[0] == 0:
            reason = reason[: head[1]]
        self.answer = f"refused: {reason.rstrip(bytes(1)).decode(errors='replace').strip()}"
        return False

    def __repr__(self) -> str:
        return f"<X11 connection setup on {self.path}: {self.answer}>"


def _peer_pid(sock: socket.socket) -> Optional[int]:
    """The pid of the process at the other end of a unix socket, where the system tells."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    size = struct.calcsize("3i")
    pid: int = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, option, size))[0]
    return pid if pid > 0 else None


def _started_here(pid: int) -> bool:
    """Tell whether ``pid`` is in a process group whose leader is a child of this process."""
    try:
        leader = os.getpgid(pid)
        with open(f"/proc/{leader}/stat", "rb") as stat:
            parent = int(stat.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return True  # cannot tell: do not hold up the start
    return parent == os.getpid()


def _setup_request(cookie: bytes) -> bytes:
    """An X11 connection setup request, little-endian, protocol 11.0, with a magic cookie."""
    name = COOKIE_PROTOCOL.encode()
    head = struct.pack("<BxHHHHxx", ord("l"), 11, 0, len(name), len(cookie))
    return head + _padded(name) + _padded(cookie)


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def _receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("the X server closed the connection")
        data += chunk
    return data


def start_xvfb(
    display: int,
    resolution: Sequence[int],
    xauthority: StrPath,
    starter: Starter,
    *,
    listen_tcp: bool = True,
    timeout: float = 20,
) -> ServiceProcess:
    """Start Xvfb on ``display`` with a new cookie in ``xauthority``; return once it serves.

    ``starter`` runs the server, as ``watcher_getter`` (with ``request`` bound) or
    :func:`pytest_services.process.start_service` (with ``log_dir`` bound) do.
    """
    _checked_resolution(resolution)
    executable = find_program("Xvfb", "xvfb")
    cookie = secrets.token_hex(16)
    write_xauthority(xauthority, display, cookie, find_program("xauth", "xauth"))
    arguments = xvfb_arguments(
        display, resolution, xauthority, listen_tcp=listen_tcp, options=xvfb_options(executable)
    )
    try:
        return starter(
            executable,
            arguments,
            None,
            timeout=timeout,
            checker=X11Handshake(display, cookie),
            grace=XVFB_GRACE,
        )
    except ServiceStartError as exc:
        owner = _other_server(display)
        if owner is not None:
            exc.args = (
                f"{exc}\n  display :{display} belongs to another X server ({owner}) that was "
                f"started outside pytest-services; stop it, or use it with "
                f"--xvfb-display :{display}.",
            )
        raise


def _other_server(display: int) -> Optional[str]:
    """Describe the X server that holds ``display``, if one does."""
    try:
        pid = x_lock_holder(display)
    except ValueError:
        pid = None
    if pid is not None:
        return f"pid {pid}, see {X_LOCK.format(display)}"
    if os.path.lexists(X_SOCKET.format(display)):
        return f"its socket is {X_SOCKET.format(display)}"
    return None


@contextlib.contextmanager
def _exported(name: str, value: str) -> Iterator[None]:
    """Set an environment variable, and restore what it was (or unset it) afterwards."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def xvfb_display(
    request: pytest.FixtureRequest, run_services: bool, display_getter: Callable[[], int]
) -> Iterator[Optional[int]]:
    """The session's X display number, exported as ``DISPLAY``; None without services or option."""
    display = xvfb_display_option(request.config)
    if display is None and run_services:
        display = display_getter()
    if display is None:
        yield None
        return
    with _exported("DISPLAY", f":{display}"):
        yield display


@pytest.fixture(scope="session")
def xvfb_resolution() -> tuple[int, int, int]:
    """Width, height and depth of the Xvfb screen, ``(1366, 768, 8)``; override to change."""
    return DEFAULT_RESOLUTION


@pytest.fixture(scope="session")
def xvfb(
    request: pytest.FixtureRequest,
    run_services: bool,
    xvfb_display: Optional[int],
    xvfb_resolution: Sequence[int],
    run_dir: str,
    watcher_getter: WatcherGetter,
) -> Iterator[Optional[ServiceProcess]]:
    """The Xvfb process on ``xvfb_display``, with ``XAUTHORITY`` exported; None if none started."""
    if not run_services or xvfb_display is None or xvfb_display_option(request.config) is not None:
        yield None
        return
    xauthority = os.path.join(run_dir, f"xvfb-{xvfb_display}.Xauthority")
    process = start_xvfb(
        xvfb_display,
        xvfb_resolution,
        xauthority,
        functools.partial(watcher_getter, request=request),
        listen_tcp=bool(request.config.getini("xvfb_listen_tcp")),
    )
    with _exported("XAUTHORITY", xauthority):
        yield process
