"""What the PostgreSQL test files share: the installation, a cache, and inner sessions."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_services._db import cache as cache_module
from pytest_services._db.postgresql import server as pg_server
from pytest_services.exceptions import PostgreSQLError
from pytest_services.folders import memory_root

try:
    BINDIR: str | None = pg_server.find_bindir()
except PostgreSQLError:
    BINDIR = None

#: Skips the tests of a module when no server is installed (CI installs one: no skip there).
needs_server = pytest.mark.skipif(BINDIR is None, reason=f"no PostgreSQL: {pg_server.INSTALL_HINT}")

# Inner test sessions write what they saw to report-<worker>.json in their folder.
REPORTER = """
import json

from postgresql_support import children_of  # noqa: F401

import psycopg
import pytest


def query(dsn, sql, *args):
    with psycopg.connect(dsn, autocommit=True) as connection:
        cursor = connection.execute(sql, args or None)
        return [list(row) for row in cursor.fetchall()] if cursor.description else None


@pytest.fixture
def report(worker_id):
    data = {}
    yield data
    with open(f"report-{worker_id}.json", "w") as out:
        json.dump(data, out, default=str)
"""


def in_memory(prefix: str) -> Iterator[Path]:
    """A fresh folder in memory, like the plugin's own cache; removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=memory_root(tempfile.gettempdir())))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def use_cache(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    """Inner sessions use ``cache``, the installation found, and this module."""
    monkeypatch.setenv("PYTHONPATH", os.path.dirname(__file__))
    monkeypatch.setenv(cache_module.CACHE_DIR_ENV, str(cache))
    monkeypatch.delenv(pg_server.BINDIR_ENV, raising=False)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--run-services", "-p", "no:cacheprovider", *args)


def report(pytester: pytest.Pytester, worker: str = "local") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((pytester.path / f"report-{worker}.json").read_text())
    return data


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (PostgreSQL's lead process groups of their own)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                if int(stat.read().rsplit(b")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
        except (OSError, ValueError):
            continue
    return found


def server_uid() -> int:
    """Who the server runs as: ``postgres`` when the tests run as root, else us."""
    account = pg_server.account()
    return os.getuid() if account is None else account.uid
