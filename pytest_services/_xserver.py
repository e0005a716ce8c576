"""Starting Xvfb: its command line, its Xauthority cookie, and finding a display it gets.

Plain code, no pytest: :func:`start_xvfb` does the work for any function with the shape of
``watcher_getter``; the fixtures in :mod:`pytest_services.xvfb` wire it to the session.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, Protocol

from pytest_services._engine.paths import StrPath
from pytest_services._reserve.displays import x_server_owner
from pytest_services._x11 import X11Handshake
from pytest_services.exceptions import (
    CalledProcessWithOutputError,
    ServiceStartError,
    XvfbError,
)
from pytest_services.process import ServiceProcess, check_output, find_program

#: Width, height and depth of the screen unless ``xvfb_resolution`` is overridden.
DEFAULT_RESOLUTION = (1366, 768, 24)
#: Screen depths Xvfb can run.
DEPTHS = (8, 15, 16, 24, 30)
#: How many displays the fixture tries when X servers started elsewhere win the race for them.
DISPLAY_TRIES = 5
#: Seconds Xvfb gets to exit on SIGTERM, removing its lock file and socket, before SIGKILL.
XVFB_GRACE = 2.0

_OPTION = re.compile(r"^([-+][\w-]+)", re.MULTILINE)


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
    fbdir: Optional[StrPath] = None,
) -> list[str]:
    """Xvfb's arguments: the display, its screen, the cookie file, the listeners, and the
    folder where the screen is kept as an XWD file, if any."""
    width, height, depth = _checked_resolution(resolution)
    arguments = [
        f":{display}",
        "-screen", "0", f"{width}x{height}x{depth}",
        "+extension", "RANDR",
        "-auth", os.fspath(xauthority),
        "-noreset",
    ]  # fmt: skip
    if fbdir is not None:
        arguments += ["-fbdir", os.fspath(fbdir)]
    if not listen_tcp:
        arguments += ["-nolisten", "tcp"]
    elif "-listen" in options:
        arguments += ["-listen", "tcp"]  # an Xvfb without -listen listens on TCP anyway
    return arguments


def _checked_resolution(resolution: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(resolution)
    if len(values) != 3 or not all(type(v) is int and v > 0 for v in values):
        raise XvfbError(
            f"Invalid xvfb_resolution {resolution!r}: give (width, height, depth) as positive "
            f"whole numbers, e.g. {DEFAULT_RESOLUTION}."
        )
    if values[2] not in DEPTHS:
        raise XvfbError(
            f"Invalid xvfb_resolution {resolution!r}: Xvfb cannot run a screen of depth "
            f"{values[2]}; use one of {', '.join(map(str, DEPTHS))}."
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


def start_xvfb(
    display: int,
    resolution: Sequence[int],
    xauthority: StrPath,
    starter: Starter,
    *,
    listen_tcp: bool = True,
    timeout: float = 20,
    fbdir: Optional[StrPath] = None,
) -> ServiceProcess:
    """Start Xvfb on ``display`` with a new cookie in ``xauthority``; return once it serves.

    ``starter`` runs the server, as ``watcher_getter`` (with ``request`` bound) or
    :func:`pytest_services.process.start_service` (with ``log_dir`` bound) do.  With
    ``fbdir``, a folder made if missing, Xvfb keeps its screen there in ``Xvfb_screen0``.
    """
    _checked_resolution(resolution)
    executable = find_program("Xvfb", "xvfb")
    cookie = secrets.token_hex(16)
    write_xauthority(xauthority, display, cookie, find_program("xauth", "xauth"))
    if fbdir is not None:
        os.makedirs(fbdir, mode=0o700, exist_ok=True)
    options = xvfb_options(executable)
    arguments = xvfb_arguments(
        display, resolution, xauthority, listen_tcp=listen_tcp, options=options, fbdir=fbdir
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
        owner = x_server_owner(display)
        if owner is not None:
            exc.args = (
                f"{exc}\n  display :{display} belongs to another X server ({owner}) that was "
                f"started outside pytest-services; stop it, or use it with "
                f"--xvfb-display :{display}.",
            )
        raise


def start_xvfb_anywhere(
    display_getter: Callable[[], int],
    resolution: Sequence[int],
    xauthority_in: StrPath,
    starter: Starter,
    *,
    listen_tcp: bool = True,
    screens: bool = False,
) -> tuple[int, str, ServiceProcess]:
    """Start Xvfb on a display from ``display_getter``; on another one if an X server started
    elsewhere takes it first.  Returns the display, its Xauthority file and the process.
    With ``screens``, the screen is kept in :func:`fbdir`."""
    for attempt in range(1, DISPLAY_TRIES + 1):
        display = display_getter()
        xauthority = os.path.join(os.fspath(xauthority_in), f"xvfb-{display}.Xauthority")
        framebuffer = fbdir(xauthority_in, display) if screens else None
        try:
            process = start_xvfb(
                display, resolution, xauthority, starter, listen_tcp=listen_tcp, fbdir=framebuffer
            )
            return display, xauthority, process
        except ServiceStartError:
            if attempt == DISPLAY_TRIES or x_server_owner(display) is None:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


# -- fixtures ------------------------------------------------------------------------------


def fbdir(folder: str | os.PathLike[str], display: int) -> str:
    """The folder, in the session's ``folder``, where Xvfb on ``display`` keeps its screen."""
    return os.path.join(os.fspath(folder), f"xvfb-{display}-screen")
