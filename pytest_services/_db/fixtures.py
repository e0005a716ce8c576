"""The hook that gives each test using a database server its reset, when asked.

See :mod:`pytest_services._db.reset`: ``do_<engine>_clean`` applies to the tests that use
the engine's server, and only those carry the fixture that looks at it.
"""

from __future__ import annotations

import pytest

from pytest_services._db.reset import request_when_asked


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    request_when_asked(items)
