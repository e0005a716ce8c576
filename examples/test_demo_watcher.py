"""Any binary as a service: ``watcher_getter`` starts it, waits for it, and stops it.

    pytest examples/test_demo_watcher.py --run-services

Here the service is Python's own HTTP server on a port that no other session or worker on
the host is using; it is ready as soon as it answers a request.
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest


@pytest.fixture(scope="module")
def web_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("web")
    (root / "hello.txt").write_text("hello from a real server\n")
    return root


@pytest.fixture(scope="module")
def web_server(
    watcher_getter: Any, port_getter: Callable[[], int], web_root: Path, request: Any
) -> str:
    port = port_getter()
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        with urllib.request.urlopen(f"{url}/hello.txt", timeout=1) as response:
            return response.status == 200

    watcher_getter(
        sys.executable,
        ["-m", "http.server", "--bind", "127.0.0.1", "--directory", web_root, str(port)],
        checker=answers,
        timeout=10,
        request=request,
    )
    return url


def test_download(web_server: str) -> None:
    with urllib.request.urlopen(f"{web_server}/hello.txt", timeout=5) as response:
        assert response.read() == b"hello from a real server\n"
