"""X display numbers that no X server and no other session or worker on the host uses.

A display is held by a byte lock in the host-wide display table, and is only handed out when
no X server holds it: no live ``/tmp/.X{N}-lock``, no socket, no abstract socket and no TCP
listener on ``6000+N``.  An X server started outside the plugin can still win a race for a
display; the Xvfb fixture then starts on another one.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Container
from logging import Logger
from typing import Optional

from pytest_services._engine.paths import StrPath
from pytest_services._reserve import registry as _registry
from pytest_services.exceptions import LockError

#: X displays handed out: ``FIRST_DISPLAY`` up to ``FIRST_DISPLAY + DISPLAY_COUNT - 1``.
FIRST_DISPLAY = 100
DISPLAY_COUNT = 2000
#: X server lock and socket of display N.
X_LOCK = "/tmp/.X{0}-lock"
X_SOCKET = "/tmp/.X11-unix/X{0}"


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


def x_lock_holder(display: int) -> Optional[int]:
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
    lock_dir: StrPath,
    services_log: Logger,
    lock_resource_timeout: float = 20,
    *,
    avoid: Container[int] = (),
) -> int:
    """Reserve an X display number that no X server and no other session uses."""
    last = FIRST_DISPLAY + DISPLAY_COUNT - 1
    deadline = time.monotonic() + lock_resource_timeout
    for display in range(FIRST_DISPLAY, last + 1):
        if display in avoid or not _registry.take("display", display, lock_dir):
            continue
        if not display_in_use(display):
            services_log.debug("reserved display %d", display)
            return display
        _registry.drop("display", display, lock_dir)
        if time.monotonic() > deadline:
            break
    raise LockError(
        f"No free X display between :{FIRST_DISPLAY} and :{last}: each is reserved by another "
        "session or used by an X server."
    )


def unlock_display(display: int, lock_dir: StrPath, services_log: Logger) -> None:
    """Release a display reserved by :func:`get_free_display`."""
    if _registry.drop("display", display, lock_dir):
        services_log.debug("released display %d", display)


def x_server_owner(display: int) -> Optional[str]:
    """Describe the X server that holds ``display`` (``pid 12, see /tmp/.X99-lock``), if any."""
    try:
        pid = x_lock_holder(display)
    except ValueError:
        pid = None
    if pid is not None:
        return f"pid {pid}, see {X_LOCK.format(display)}"
    if os.path.lexists(X_SOCKET.format(display)):
        return f"its socket is {X_SOCKET.format(display)}"
    return None
