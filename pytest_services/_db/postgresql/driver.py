"""psycopg, imported in the background: its import takes about as long as a server's start.

Plain code, no pytest.  :func:`import_meanwhile` starts the import in a thread and returns
a call that waits for it; the fixtures start the server in between, and import psycopg
themselves afterwards, which then costs nothing (or says what to install).
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import threading
from typing import Callable

__all__ = ["import_meanwhile", "installed"]


def installed() -> bool:
    """Whether psycopg can be imported (without importing it)."""
    return "psycopg" in sys.modules or importlib.util.find_spec("psycopg") is not None


def _import(modules: tuple[str, ...]) -> None:
    for name in modules:
        with contextlib.suppress(Exception):  # whoever needs it imports it again, and sees why
            importlib.import_module(name)


def import_meanwhile(*also: str) -> Callable[[], None]:
    """Begin importing psycopg in a thread, then the modules ``also`` names (Django's
    backend), unless it is imported or not installed; the call returned waits until the
    imports are over."""
    if "psycopg" in sys.modules or not installed():
        return lambda: None
    importing = threading.Thread(
        target=_import, args=(("psycopg", *also),), name="import psycopg", daemon=True
    )
    importing.start()
    return importing.join
