"""Building cache entries (the shared database pipeline): bounded in time and disk, once per
run, whoever waits knows for whom, and damage or leftovers never outlive a build."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from proc_support import processes_naming

from pytest_services._db import build, cache
from pytest_services._db.cache import CacheEntry
from pytest_services._engine.commands import check_output
from pytest_services.exceptions import DatabaseError, LockError

LOG = logging.getLogger("test_db_build")


def make_data(folder: str, **files: bytes) -> dict[str, Any]:
    """A builder's work: a data directory holding ``files``."""
    data = Path(folder, "data")
    data.mkdir()
    for name, content in files.items():
        (data / name).write_bytes(content)
    return {}


@pytest.fixture
def entry(tmp_path: Path) -> CacheEntry:
    folder = tmp_path / "cache"
    folder.mkdir()
    return CacheEntry.in_folder(str(folder), "engine-1.0-abc")


def test_a_build_past_its_time_is_stopped_with_what_it_started(entry: CacheEntry) -> None:
    marker = f"pytest-services-test-hang-{os.getpid()}"

    def hangs(folder: str) -> dict[str, Any]:
        check_output(["sh", "-c", "sleep 600", marker])
        return make_data(folder)

    started = time.monotonic()
    with pytest.raises(DatabaseError, match=r"Preparing the test state took longer than 1 s"):
        build.ensure(entry, hangs, LOG, "preparing the test state", timeout=1)
    assert time.monotonic() - started < 15
    deadline = time.monotonic() + 5
    while processes_naming(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_naming(marker) == []
    assert sorted(os.listdir(entry.cache)) == ["engine-1.0-abc.lock"]


def test_a_failure_is_given_again_in_the_same_run_and_retried_in_the_next(
    entry: CacheEntry,
) -> None:
    calls = []

    def fails(folder: str) -> dict[str, Any]:
        calls.append(folder)
        raise DatabaseError(f"The loader broke (call {len(calls)})")

    with pytest.raises(DatabaseError) as first:
        build.ensure(entry, fails, LOG, "preparing", run_id="run-1")
    assert str(first.value) == "The loader broke (call 1)"
    for _ in range(2):  # the other workers of the run
        with pytest.raises(DatabaseError) as again:
            build.ensure(entry, fails, LOG, "preparing", run_id="run-1")
        assert str(again.value) == (
            "The loader broke (call 1)\n  (failed earlier in this run; not tried again)"
        )
    assert len(calls) == 1
    with pytest.raises(DatabaseError, match=r"call 2\)$"):
        build.ensure(entry, fails, LOG, "preparing", run_id="run-2")
    assert len(calls) == 2
    assert build.ensure(entry, lambda folder: make_data(folder, a=b"1"), LOG, "x", run_id="run-3")
    assert not os.path.exists(f"{entry.path}.failed")


HOLDER = """
import logging, sys, time
from pytest_services._db import build
from pytest_services._db.cache import CacheEntry

def slow(folder):
    import pathlib
    print("building", flush=True)
    time.sleep(float(sys.argv[3]))
    (pathlib.Path(folder) / "data").mkdir()
    return {}

build.ensure(CacheEntry.in_folder(sys.argv[1], sys.argv[2]), slow, logging.getLogger(), "x")
"""


def start_holder(entry: CacheEntry, seconds: float) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, entry.cache, entry.key, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == "building\n"
    return holder


def test_a_waiting_session_says_which_process_builds(
    entry: CacheEntry, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = start_holder(entry, 600)
    try:
        monkeypatch.setattr(build, "WAIT_MARGIN", 0)
        with pytest.raises(LockError) as info:
            build.ensure(entry, make_data, LOG, "preparing the test state", timeout=1)
        assert f"Waited 1 s for the pytest process {holder.pid} (since " in str(info.value)
        assert "which is preparing the test state" in str(info.value)
    finally:
        holder.kill()
        holder.wait()
    holder = start_holder(entry, 1)
    with caplog.at_level(logging.INFO):
        assert not build.ensure(entry, make_data, LOG, "preparing the test state")
    holder.wait()
    assert f"waiting for the pytest process {holder.pid} (since" in caplog.text
    assert entry.is_complete()


FILL_DISK = """
set -e
mount -t tmpfs -o size={size} tmpfs {folder}
cd {folder} && mkdir cache
exec {python} -c '
import logging, sys
from pytest_services._db import build
from pytest_services._db.cache import CacheEntry
from pytest_services._engine.commands import check_output

def fills(folder):
    # Like a server that waits for free space instead of failing: write, and on a full
    # disk wait and try again, for ever.
    write = "head -c 1048576 /dev/zero >> big 2>/dev/null || sleep 0.2"
    check_output(["sh", "-c", f"while :; do {{write}}; done"], cwd=folder)

try:
    build.ensure(CacheEntry.in_folder("cache", "k"), fills, logging.getLogger(), "x", timeout=120)
except Exception as exc:
    print(type(exc).__name__, exc)
'
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root")
@pytest.mark.parametrize("size", ["40m", "16m"])
def test_a_full_disk_fails_the_build_at_once(tmp_path: Path, size: str) -> None:
    folder = tmp_path / "small"
    folder.mkdir()
    script = FILL_DISK.format(size=size, folder=folder, python=sys.executable)
    started = time.monotonic()
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120
    )
    assert time.monotonic() - started < 60
    assert result.returncode == 0, result.stderr
    assert "DatabaseError The filesystem of the cache folder cache is full (" in result.stdout
    # 40 MiB passes the check before the build, which the writer then fills up; 16 does not.
    stopped = ", and x was stopped, 32 MiB needed at least" in result.stdout
    assert stopped == (size == "40m"), result.stdout
    assert "set PYTEST_SERVICES_CACHE_DIR to a folder on a roomier filesystem" in result.stdout


def test_a_changed_file_of_an_entry_makes_it_incomplete(entry: CacheEntry) -> None:
    build.ensure(entry, lambda folder: make_data(folder, table=b"x" * 100), LOG, "x")
    Path(entry.path, "state.json").write_text("{}")  # not listed: beside the data, ignored
    assert entry.is_complete()
    table = Path(entry.data_dir, "table")
    table.write_bytes(b"y" * 100)  # same size, other bytes
    assert not entry.is_complete()
    assert build.ensure(entry, lambda folder: make_data(folder, table=b"x" * 100), LOG, "x")
    assert entry.is_complete()
    Path(entry.data_dir, "planted").write_bytes(b"")
    assert not entry.is_complete()


def test_abandoned_builds_of_any_key_are_swept(entry: CacheEntry, tmp_path: Path) -> None:
    folder = Path(entry.cache)
    (folder / ".build-other-key-dead1234").mkdir()
    (folder / ".trash-gone-key-4242").mkdir()
    live = CacheEntry.in_folder(entry.cache, "live-key")
    holder = start_holder(live, 600)
    try:
        build.ensure(entry, make_data, LOG, "x")
        left = sorted(name for name in os.listdir(folder) if name.startswith("."))
        assert len(left) == 1 and left[0].startswith(".build-live-key-")
    finally:
        holder.kill()
        holder.wait()


def test_superseded_states_and_a_full_cache_are_pruned(
    entry: CacheEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def version(n: int, lineage: str = "mine", size: int = 0) -> CacheEntry:
        found = CacheEntry.in_folder(entry.cache, f"state-v{n}")

        def fill(folder: str) -> dict[str, Any]:
            make_data(folder, rows=os.urandom(size))
            return {"lineage": lineage}

        build.ensure(found, fill, LOG, "x")
        past = time.time() - 1000 + n
        os.utime(found.file(cache.MARKER), (past, past))
        return found

    version(1)
    version(2, lineage="someone else's")
    version(3)
    version(4)
    names = sorted(os.listdir(entry.cache))
    assert "state-v1" not in names  # superseded twice
    assert {"state-v2", "state-v3", "state-v4"} <= set(names)
    monkeypatch.setenv(cache.MAX_MB_ENV, "3")
    version(5, lineage="big", size=2 * 1024 * 1024)
    version(6, lineage="big too", size=2 * 1024 * 1024)
    names = sorted(name for name in os.listdir(entry.cache) if not name.endswith(".lock"))
    assert names == ["state-v6"]


SMALL_DISK = """
set -e
mount -t tmpfs -o size={size} tmpfs {folder}
cd {folder} && mkdir cache scratch
exec {python} -c '
import logging, os
from pathlib import Path
from pytest_services._db import build, spare
from pytest_services._db.cache import CacheEntry

def fill(folder):
    Path(folder, "data").mkdir()
    Path(folder, "data", "rows").write_bytes(os.urandom(12 * 1024 * 1024))
    return {{}}

entry = CacheEntry.in_folder("cache", "k")
build.ensure(entry, fill, logging.getLogger(), "x")
spare.make(entry, "scratch")
spare.finish()
print("spares", len(entry.spares()), "scratch", os.listdir("scratch"))
'
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root")
@pytest.mark.parametrize(("size", "made"), [("48m", 0), ("64m", 1)])
def test_a_spare_leaves_the_room_that_servers_and_builds_need(
    tmp_path: Path, size: str, made: int
) -> None:
    folder = tmp_path / "small"
    folder.mkdir()
    script = SMALL_DISK.format(size=size, folder=folder, python=sys.executable)
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    # 12 MiB of data: a spare needs 12 MiB and the 32 MiB kept free, 36 are left on 48.
    assert result.stdout.split() == ["spares", str(made), "scratch", "[]"]
