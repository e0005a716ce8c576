"""When the per-test reset runs: before each test that uses a database server, once asked.

Plain code, no pytest at import time.  Every engine has the same pair of fixtures:
``<engine>_clean`` (puts the default database back in its prepared state, through the
engine's :class:`~pytest_services._db.protocol.Cleaner`) and ``do_<engine>_clean`` (a
session fixture, default False, that makes every test which uses the server get it).

A test that uses no server pays nothing for the second: instead of an autouse fixture,
each engine names (:func:`when_asked`) its server fixture and the fixture that resets
when asked, and once the tests are collected, :func:`request_when_asked` adds the latter
to the tests that use the former -- where an autouse fixture would have been: first
among the test's function-scoped fixtures.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Optional

from pytest_services._db.protocol import Cleaner
from pytest_services._engine import ledger

__all__ = ["clean_when_asked", "request_when_asked", "reset", "when_asked"]

#: Server fixture -> the fixture that resets before each test using it, when asked.
_WHEN_ASKED: dict[str, str] = {}


def when_asked(*, server: str, fixture: str) -> None:
    """Give every test that uses the fixture ``server`` the fixture ``fixture`` too."""
    _WHEN_ASKED[server] = fixture


def request_when_asked(items: Iterable[Any]) -> None:
    """Add the reset-when-asked fixtures to the collected ``items`` that use a server."""
    if not _WHEN_ASKED:
        return
    for item in items:
        names = getattr(item, "fixturenames", None)
        if not names:
            continue
        for server, fixture in _WHEN_ASKED.items():
            if server in names and fixture not in names:
                names.insert(_first_function_scoped(item, names), fixture)


def _first_function_scoped(item: Any, names: list[str]) -> int:
    """Where pytest puts autouse fixtures of function scope: before the test's first
    function-scoped fixture (the closure is sorted by scope, the widest first)."""
    definitions = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", None)
    if definitions is None:
        return len(names)
    for index, name in enumerate(names):
        found = definitions.get(name)
        if not found or getattr(found[-1], "scope", "function") == "function":
            return index
    return len(names)


def clean_when_asked(request: Any, *, server: str, do_clean: str, clean: str) -> None:
    """Request the fixture ``clean`` for the test of ``request`` when it uses the fixture
    ``server`` and the session fixture ``do_clean`` is true."""
    if server in request.fixturenames and request.getfixturevalue(do_clean):
        request.getfixturevalue(clean)


def reset(cleaner: Optional[Cleaner], service: str = "database", test: str = "") -> None:
    """Reset the default database before the test ``test`` (its node id), when services run
    (``cleaner`` is None when they don't); the session's bill counts it for ``service``."""
    if cleaner is not None:
        with ledger.timed_reset(service):
            cleaner.reset(test)
