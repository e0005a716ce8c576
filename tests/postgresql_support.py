"""What the PostgreSQL test files share: the installation, a cache, and inner sessions."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from proc_support import alive

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


# After REPORTER and a SNAPSHOT of queries, in an inner conftest: ``snapshot(dsn)``, and
# ``check``, which cleans the database and compares it with what the first test saw.
SNAPSHOT_CHECK = """

def snapshot(dsn):
    return {name: query(dsn, sql) for name, sql in SNAPSHOT.items()}


SEEN = {}


@pytest.fixture
def check(postgresql_clean, postgresql_dsn):
    now = snapshot(postgresql_dsn)
    SEEN.setdefault("first", now)
    for name, value in SEEN["first"].items():
        assert now[name] == value, name
    return psycopg.connect(postgresql_dsn, autocommit=True)
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


def kill_once_written(pytester: pytest.Pytester, name: str) -> tuple[str, list[int]]:
    """Run the inner session in a pytest process until it writes the file ``name`` (the
    pid of a server, a space, anything), SIGKILL that pytest, and return what it wrote and
    the pids of the server and of its children (which lead process groups of their own)."""
    written = pytester.path / name
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "--run-services", "-p", "no:cacheprovider"],
        cwd=pytester.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not written.exists() or not written.read_text():
            assert process.poll() is None, f"pytest ended before it wrote {name}"
            assert time.monotonic() < deadline, f"pytest never wrote {name}"
            time.sleep(0.01)
        text = written.read_text()
        server = int(text.split()[0])
        group = [server, *children_of(server)]
        assert len(group) > 2, "the server and its workers"
    finally:
        process.kill()
        process.wait()
    return text, group


def left_alive(pids: list[int], folder: str = "") -> list[int]:
    """The processes of ``pids`` still alive after waiting 15 s for them (and for ``folder``
    to be gone); those are killed, so that nothing hangs around after a failure."""
    deadline = time.monotonic() + 15
    while any(map(alive, pids)) or (folder and os.path.exists(folder)):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    left = [pid for pid in pids if alive(pid)]
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return left


def server_uid() -> int:
    """Who the server runs as: ``postgres`` when the tests run as root, else us."""
    account = pg_server.account()
    return os.getuid() if account is None else account.uid
