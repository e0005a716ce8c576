"""When the per-test reset runs: before each test that uses a database server, once asked.

Plain code, no pytest at import time.  Every engine has the same pair of fixtures:
``<engine>_clean`` (puts the default database back in its prepared state, through the
engine's :class:`~pytest_services._db.protocol.Cleaner`) and ``do_<engine>_clean`` (a
session fixture, default False, that makes every test which uses the server get it).
"""

from __future__ import annotations

from typing import Any, Optional

from pytest_services._db.protocol import Cleaner

__all__ = ["clean_when_asked", "reset"]


def clean_when_asked(request: Any, *, server: str, do_clean: str, clean: str) -> None:
    """Request the fixture ``clean`` for the test of ``request`` when it uses the fixture
    ``server`` and the session fixture ``do_clean`` is true."""
    if server in request.fixturenames and request.getfixturevalue(do_clean):
        request.getfixturevalue(clean)


def reset(cleaner: Optional[Cleaner]) -> None:
    """Reset the default database, when services run (``cleaner`` is None when they don't)."""
    if cleaner is not None:
        cleaner.reset()
