"""Spare copies of prepared states: made for the next session, taken with a rename, never
of another build, and gone with their entry."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from postgresql_support import REPORTER, needs_server, run, use_cache

from pytest_services._db import build, cache, spare
from pytest_services._db.cache import CacheEntry
from pytest_services.folders import memory_root

LOG = logging.getLogger("test_spare")


def fill(content: bytes) -> build.Builder:
    def builder(folder: str) -> dict[str, Any]:
        data = Path(folder, "data")
        (data / "base").mkdir(parents=True)
        (data / "base" / "rows").write_bytes(content)
        (data / "PG_VERSION").write_text("15\n")
        return {}

    return builder


@pytest.fixture
def entry(tmp_path: Path) -> CacheEntry:
    folder = tmp_path / "cache"
    folder.mkdir()
    found = CacheEntry.in_folder(str(folder), "engine-1.0-state-abc")
    build.ensure(found, fill(b"first build"), LOG, "x")
    return found


def make_spare(entry: CacheEntry, scratch: Path) -> None:
    spare.make(entry, str(scratch))
    spare.finish()


def test_a_spare_is_taken_once_and_holds_the_entry(entry: CacheEntry, tmp_path: Path) -> None:
    for _ in range(3):  # two at most, by default
        make_spare(entry, tmp_path)
    assert len(entry.spares()) == spare.DEFAULT_COPIES == 2
    taken = [tmp_path / "one", tmp_path / "two", tmp_path / "three"]
    (tmp_path / "one").mkdir()  # an empty folder is replaced
    assert [spare.take(entry, str(path)) for path in taken] == [True, True, False]
    assert (taken[0] / "base" / "rows").read_bytes() == b"first build"
    assert (taken[1] / "PG_VERSION").read_text() == "15\n"
    assert entry.spares() == []
    assert not any(name.startswith("spare-") for name in os.listdir(tmp_path))


def test_a_spare_of_an_older_build_is_never_taken_and_goes(
    entry: CacheEntry, tmp_path: Path
) -> None:
    make_spare(entry, tmp_path)
    (old,) = entry.spares()
    cache.discard(entry.path)  # rebuilt, with the same key
    build.ensure(entry, fill(b"second build"), LOG, "x")
    assert not spare.take(entry, str(tmp_path / "data"))
    assert entry.spares() == [old]
    make_spare(entry, tmp_path)
    (new,) = entry.spares()
    assert new != old
    assert spare.take(entry, str(tmp_path / "data"))
    assert (tmp_path / "data" / "base" / "rows").read_bytes() == b"second build"


def test_an_entry_built_before_build_ids_gets_one_and_spares(
    entry: CacheEntry, tmp_path: Path
) -> None:
    os.unlink(entry.file(cache.BUILD_ID))  # as entries were built before: no id, not listed
    manifest = entry.manifest()
    del manifest["files"][cache.BUILD_ID]
    Path(entry.file(cache.MARKER)).write_text(json.dumps(manifest))
    assert entry.build_id() is None and entry.is_complete()
    assert not spare.take(entry, str(tmp_path / "data"))
    make_spare(entry, tmp_path)
    build_id = entry.build_id()
    assert build_id is not None and entry.is_complete()
    assert [os.path.basename(path).split("@")[1] for path in entry.spares()] == [build_id]
    assert sorted(os.listdir(entry.path)) == ["build.id", "complete.json", "data"]


def test_spares_go_with_their_entry_and_count_in_the_cache_size(
    entry: CacheEntry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_spare(entry, tmp_path)
    past = 1_000_000_000
    os.utime(entry.file(cache.MARKER), (past, past))  # unused for years
    other = CacheEntry.in_folder(entry.cache, "engine-1.0-state-other")
    build.ensure(other, fill(b"other"), LOG, "x")  # prunes what is old
    assert sorted(os.listdir(entry.cache)) == [
        "engine-1.0-state-other",
        "engine-1.0-state-other.lock",
    ]
    monkeypatch.setenv(cache.MAX_MB_ENV, "1")
    big = bytes(range(256)) * 2048  # 512 KiB of data, no holes
    kept = CacheEntry.in_folder(entry.cache, "engine-1.0-state-kept")
    build.ensure(kept, fill(big), LOG, "x")
    make_spare(kept, tmp_path)
    os.utime(kept.file(cache.MARKER), (past + 1, past + 1))
    build.ensure(CacheEntry.in_folder(entry.cache, "engine-1.0-state-new"), fill(b"new"), LOG, "x")
    assert kept.spares() == [] and not os.path.exists(kept.path)  # entry and spare: > 1 MiB


def test_no_spare_when_turned_off(
    entry: CacheEntry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_spare(entry, tmp_path)
    monkeypatch.setenv(spare.COPIES_ENV, "0")
    assert not spare.take(entry, str(tmp_path / "data"))
    cache.discard(entry.spares()[0])
    make_spare(entry, tmp_path)
    assert entry.spares() == []


def test_no_spare_is_made_where_it_could_not_be_renamed_into_place(tmp_path: Path) -> None:
    folder = Path(memory_root(str(tmp_path)), f"spare-test-{os.getpid()}")
    folder.mkdir()
    try:
        found = CacheEntry.in_folder(str(folder), "engine-1.0-state-abc")
        build.ensure(found, fill(b"rows"), LOG, "x")
        assert os.stat(folder).st_dev != os.stat(tmp_path).st_dev
        make_spare(found, tmp_path)
        assert found.spares() == []
    finally:
        cache.discard(str(folder))


# Real servers: sessions in a row, and the workers of a run, each take a spare.

CONFTEST = (
    REPORTER
    + """
from pathlib import Path

from pytest_services.postgresql import PostgreSQLInit


@pytest.fixture(scope="session")
def postgresql_init():
    return PostgreSQLInit(load=[Path("schema.sql")])
"""
)

TESTS = """
import pytest
from conftest import query


@pytest.mark.parametrize("n", range(4))
def test_loaded(n, postgresql_dsn, worker_id, report):
    report["rows"] = query(postgresql_dsn, "SELECT count(*), max(id) FROM thing")
"""


@pytest.fixture
def project(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[pytest.Pytester]:
    cache_dir = Path(memory_root(str(tmp_path)), f"spare-pg-{os.getpid()}-{tmp_path.name}")
    use_cache(monkeypatch, cache_dir)
    monkeypatch.delenv(spare.COPIES_ENV, raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(TESTS)
    pytester.makeini("[pytest]\nservices_bill_json = bill.json\n")
    (pytester.path / "schema.sql").write_text(
        "CREATE TABLE thing (id serial PRIMARY KEY);\n"
        "INSERT INTO thing SELECT FROM generate_series(1, 7);\n"
    )
    yield pytester
    cache.discard(str(cache_dir))


def pg_cache() -> Path:
    return Path(os.environ[cache.CACHE_DIR_ENV], "postgresql")


def spares() -> list[str]:
    return sorted(name for name in os.listdir(pg_cache()) if name.startswith(cache.SPARE_PREFIX))


def states(project: pytest.Pytester) -> tuple[int, int]:
    """States built and reused, as the bill counts them."""
    found = json.loads((project.path / "bill.json").read_text())["services"]["PostgreSQL"]
    return found["states_built"], found["states_reused"]


def seen(project: pytest.Pytester, worker: str = "local") -> Any:
    return json.loads((project.path / f"report-{worker}.json").read_text())["rows"]


@needs_server
def test_each_session_starts_from_the_spare_of_the_one_before(project: pytest.Pytester) -> None:
    run(project).assert_outcomes(passed=4)
    before = spares()
    assert len(before) == 1 and states(project) == (1, 0)
    for _ in range(2):
        run(project).assert_outcomes(passed=4)
        assert seen(project) == [[7, 7]]
        now = spares()
        assert len(now) == 1 and now != before  # taken, and another made for the next one
        assert states(project) == (0, 1)
        before = now


@needs_server
def test_every_worker_takes_a_spare_of_its_own(project: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    run(project, "-n", "2").assert_outcomes(passed=4)
    before = spares()
    assert len(before) == 2
    run(project, "-n", "2").assert_outcomes(passed=4)
    assert seen(project, "gw0") == seen(project, "gw1") == [[7, 7]]
    assert states(project) == (0, 2)
    assert len(spares()) == 2 and not set(spares()) & set(before)


@needs_server
def test_a_spare_of_a_state_built_anew_is_not_taken(project: pytest.Pytester) -> None:
    run(project).assert_outcomes(passed=4)
    (old,) = spares()
    aside = pg_cache() / "aside"
    os.rename(pg_cache() / old, aside)
    (aside / "PG_VERSION").write_text("1\n")  # a server would refuse to start on it
    key = old.split("@")[0][len(cache.SPARE_PREFIX) :]
    entry = CacheEntry.in_folder(str(pg_cache()), key)
    damaged = next(p for p in Path(entry.data_dir, "base").rglob("*") if p.is_file())
    damaged.write_bytes(damaged.read_bytes())  # a new modification time: a rebuild
    run(project).assert_outcomes(passed=4)
    assert states(project) == (1, 0)
    (new,) = spares()
    os.rename(pg_cache() / new, pg_cache() / "new")  # the new build's spare goes, and
    os.rename(aside, pg_cache() / old)  # the old build's comes back
    run(project).assert_outcomes(passed=4)
    assert seen(project) == [[7, 7]] and states(project) == (0, 1)
    assert old not in spares() and len(spares()) == 1
