"""One service for a whole pytest-xdist run: ``shared_service``.

    pytest examples/test_demo_shared.py -n 2      # one server, used by both workers
    pytest examples/test_demo_shared.py --run-services

The first worker that asks starts the server; the others wait for it and get the same
value.  The server belongs to the run: it stops when the last worker is done.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from typing import Any, Callable, Optional

import pytest

from pytest_services import checkers


def start_web_server(watcher_getter: Any, port_getter: Callable[[], int]) -> dict[str, Any]:
    port = port_getter()
    watcher_getter(
        sys.executable,
        ["-m", "http.server", "--bind", "127.0.0.1", "--directory", watcher_getter.folder,
         str(port)],
        checker=checkers.http(f"http://127.0.0.1:{port}/"),
        timeout=10,
    )  # fmt: skip
    return {"url": f"http://127.0.0.1:{port}", "started_by": os.getpid()}


@pytest.fixture(scope="session")
def web(shared_service: Any) -> Optional[dict[str, Any]]:
    service: Optional[dict[str, Any]] = shared_service("web", start_web_server)
    return service


@pytest.mark.parametrize("page", ["", "?a", "?b", "?c"])
def test_every_worker_uses_the_same_server(web: dict[str, Any], page: str) -> None:
    with urllib.request.urlopen(f"{web['url']}/{page}", timeout=5) as response:
        assert response.status == 200
