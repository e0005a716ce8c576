"""Xvfb, the virtual X server: one authenticated display per session or pytest-xdist worker.

The server never runs with ``-ac``.  Each start gets a fresh random MIT-MAGIC-COOKIE-1,
written with ``xauth`` to an Xauthority file private to the session and exported as
``XAUTHORITY``, so both the unix socket and TCP on ``127.0.0.1:6000+N`` ask for it.
Xvfb is ready when it accepts an X11 connection setup with that cookie on its unix socket;
the check blocks on the server's answer instead of sleeping.  ``-displayfd`` is not used:
it makes Xvfb skip its ``/tmp/.X{N}-lock`` file, which other X servers go by.  ``-noreset``
spares the server a full reset each time its last client disconnects.  The screen is 24 bits
deep (TrueColor) by default: browsers and GUI toolkits draw nothing visible at depth 8.  With
``-fbdir`` the screen is also a file, which :mod:`pytest_services._screenshot` reads.

Nothing but the fixtures at the bottom needs pytest: :func:`start_xvfb` does the work for
any function with the shape of ``watcher_getter``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Optional

import pytest

from pytest_services import _screenshot
from pytest_services._engine.paths import StrPath  # noqa: F401 (importable here before 3.1)
from pytest_services._environ import exported
from pytest_services._options import xvfb_display_option
from pytest_services._reserve.displays import X_LOCK, X_SOCKET, x_lock_holder  # noqa: F401
from pytest_services._x11 import X11Handshake  # noqa: F401 (importable here before 3.1)
from pytest_services._xserver import (  # noqa: F401 (importable here before 3.1)
    DEFAULT_RESOLUTION,
    DEPTHS,
    DISPLAY_TRIES,
    XVFB_GRACE,
    Starter,
    fbdir,
    start_xvfb,
    start_xvfb_anywhere,
    write_xauthority,
    xvfb_arguments,
    xvfb_options,
)
from pytest_services.exceptions import (  # noqa: F401 (importable here before 3.1)
    CalledProcessWithOutputError,
    ServiceError,
    ServiceStartError,
    XvfbError,
)
from pytest_services.process import ServiceProcess, check_output, find_program  # noqa: F401
from pytest_services.service import WatcherGetter

__all__ = [
    "DEFAULT_RESOLUTION",
    "DEPTHS",
    "XvfbError",
    "start_xvfb",
    "write_xauthority",
    "xvfb",
    "xvfb_arguments",
    "xvfb_display",
    "xvfb_resolution",
]


@pytest.fixture(scope="session")
def _xvfb_servers() -> dict[int, tuple[str, ServiceProcess]]:
    """The Xvfb servers that ``xvfb_display`` started, by display: Xauthority file, process."""
    return {}


@pytest.fixture(scope="session")
def xvfb_display(
    request: pytest.FixtureRequest,
    run_services: bool,
    display_getter: Callable[[], int],
    _xvfb_servers: dict[int, tuple[str, ServiceProcess]],
) -> Iterator[Optional[int]]:
    """The session's X display (``DISPLAY``), served by Xvfb; None without services."""
    display = xvfb_display_option(request.config)
    if display is not None:
        with exported("DISPLAY", f":{display}"), _screenshot.showing(display, None):
            yield display
        return
    if not run_services:
        yield None
        return
    run_dir, screens = request.getfixturevalue("run_dir"), _screenshot.enabled(request.config)
    display, xauthority, process = start_xvfb_anywhere(
        display_getter,
        request.getfixturevalue("xvfb_resolution"),
        run_dir,
        functools.partial(request.getfixturevalue("watcher_getter"), request=request),
        listen_tcp=bool(request.config.getini("xvfb_listen_tcp")),
        screens=screens,
    )
    _xvfb_servers[display] = (xauthority, process)
    screen = _screenshot.showing(display, fbdir(run_dir, display) if screens else None)
    with exported("DISPLAY", f":{display}"), exported("XAUTHORITY", xauthority), screen:
        yield display


@pytest.fixture(scope="session")
def xvfb_resolution() -> tuple[int, int, int]:
    """Width, height and depth of the Xvfb screen, ``(1366, 768, 24)``; override to change."""
    return DEFAULT_RESOLUTION


@pytest.fixture(scope="session")
def xvfb(
    request: pytest.FixtureRequest,
    run_services: bool,
    xvfb_display: Optional[int],
    xvfb_resolution: Sequence[int],
    run_dir: str,
    watcher_getter: WatcherGetter,
    _xvfb_servers: dict[int, tuple[str, ServiceProcess]],
) -> Iterator[Optional[ServiceProcess]]:
    """The Xvfb process on ``xvfb_display``, with ``XAUTHORITY`` exported; None if none started."""
    if not run_services or xvfb_display is None or xvfb_display_option(request.config) is not None:
        yield None
        return
    if xvfb_display in _xvfb_servers:
        yield _xvfb_servers[xvfb_display][1]
        return
    # xvfb_display was overridden: start Xvfb on the display it chose.
    xauthority = os.path.join(run_dir, f"xvfb-{xvfb_display}.Xauthority")
    framebuffer = fbdir(run_dir, xvfb_display) if _screenshot.enabled(request.config) else None
    process = start_xvfb(
        xvfb_display,
        xvfb_resolution,
        xauthority,
        functools.partial(watcher_getter, request=request),
        listen_tcp=bool(request.config.getini("xvfb_listen_tcp")),
        fbdir=framebuffer,
    )
    with exported("XAUTHORITY", xauthority), _screenshot.showing(xvfb_display, framebuffer):
        yield process
