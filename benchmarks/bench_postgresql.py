"""How fast a test session gets a PostgreSQL server, and how fast ``postgresql_clean`` is.

    python benchmarks/bench_postgresql.py [--rounds N] [--resets N] [--big-tables N]
        [--peer-venv DIR] [--peer-user NAME] [--skip-peer]

Measures, in one run and on this machine (medians):

* *start*: the setup of the first test that uses ``postgresql`` in a real pytest session,
  with a warm cache, for an empty database and for a prepared state (20 tables with an index
  each, 1000 rows); against the floor done by hand: copy a ready data directory and start
  ``postgres`` on it with the same settings, until a client connects;
* *reset*: the setup of ``postgresql_clean`` after a test that changed nothing, changed rows
  in one table, or created, altered or dropped a table; on the 20-table schema and on one
  with ``--big-tables`` tables; and in the same sessions, the limit of any reset (the
  cheapest query that tells whether anything was written: ``pg_current_wal_insert_lsn()``
  on an open connection) and what a transaction per test costs (``BEGIN`` before the test,
  ``ROLLBACK`` of its change to one table's rows after it);
* the memory of a server: the resident set of the server's processes, summed;
* both against pytest-postgresql (see ``_pg_peer.py``): the start of its ``postgresql_proc``,
  and its function-scoped ``postgresql`` on the same schemas.

Needs psycopg in the running interpreter, and pytest-services importable from it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
from _pg_peer import (
    DEFAULT_PEER_VENV,
    ensure_peer_venv,
    peer_ready,
    peer_resets,
    peer_user,
    per_reset,
    print_ready,
    print_resets,
)

from pytest_services._db.postgresql import server as pg_server
from pytest_services.folders import memory_root

TIMING_CONFTEST = (
    """
import json, os, time
from pathlib import Path

import pytest
from pytest_services.postgresql import PostgreSQLInit

_times = {"clean": [], "setup": [], "teardown": []}

"""
    + _common.RUN_TIMES_HOOKS
    + """


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    start = time.perf_counter()
    yield
    if fixturedef.argname == "postgresql_clean":
        _times["clean"].append([request.node.name, time.perf_counter() - start])


def pytest_sessionfinish(session):
    with open(os.environ["BENCH_TIMES"], "w") as out:
        json.dump(_times, out)


@pytest.fixture(scope="session")
def postgresql_init():
    tables = int(os.environ.get("BENCH_TABLES", "0"))
    if not tables:
        return None
    path = Path(os.environ["BENCH_SQL"])
    return PostgreSQLInit(load=[path])
"""
)

START_TEST = """
import os

import psycopg


def test_query(postgresql, postgresql_dsn):
    with psycopg.connect(postgresql_dsn) as connection:
        connection.execute("SELECT 1")
    pids = [postgresql.pid] + [
        int(e) for e in os.listdir("/proc") if e.isdigit() and _parent(e) == postgresql.pid
    ]
    with open(os.environ["BENCH_RSS"], "w") as out:
        out.write(f"{sum(_kb(pid, 'status', 'VmRSS:') for pid in pids)} "
                  f"{sum(_kb(pid, 'smaps_rollup', 'Pss:') for pid in pids)}")


def _parent(entry):
    try:
        with open(f"/proc/{entry}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def _kb(pid, name, field):
    try:
        with open(f"/proc/{pid}/{name}") as lines:
            return next(int(line.split()[1]) for line in lines if line.startswith(field))
    except (OSError, StopIteration):
        return 0
"""

#: Each kind of test, then the test whose ``postgresql_clean`` undoes it.
CHANGES = {
    "nothing": "pass",
    "rows in one table": "connection.execute('UPDATE t1 SET v = v + 1 WHERE id <= 5')",
    "table created": "connection.execute('CREATE TABLE extra (i int)')",
    "table altered": "connection.execute('ALTER TABLE t2 ADD COLUMN extra int')",
    "table dropped": "connection.execute('DROP TABLE t3')",
}

RESET_TEST = """
import time

import psycopg
import pytest

CHANGES = {changes!r}
ORDER = [kind for _ in range({resets}) for kind in CHANGES] + ["nothing"]


@pytest.mark.parametrize("step", range(len(ORDER)))
def test_step(step, postgresql_clean, postgresql_dsn):
    with psycopg.connect(postgresql_dsn, autocommit=True) as connection:
        exec(CHANGES[ORDER[step]])


OPEN = {{}}


@pytest.mark.parametrize("n", range({resets}))
def test_limit_and_rollback(n, postgresql_dsn):
    from conftest import _times

    # The limit: the cheapest question that tells whether anything was written since.
    question = OPEN.setdefault("limit", psycopg.connect(postgresql_dsn, autocommit=True))
    started = time.perf_counter()
    question.execute("SELECT pg_current_wal_insert_lsn()").fetchone()
    _times.setdefault("limit", []).append(time.perf_counter() - started)
    # What a framework's transactional test case pays: BEGIN before, ROLLBACK after.
    connection = OPEN.setdefault("test", psycopg.connect(postgresql_dsn, autocommit=True))
    started = time.perf_counter()
    connection.execute("BEGIN")
    begun = time.perf_counter()
    connection.execute("UPDATE t1 SET v = v + 1 WHERE id <= 5")
    done = time.perf_counter()
    connection.execute("ROLLBACK")
    _times.setdefault("rollback", []).append(begun - started + time.perf_counter() - done)
"""


def schema(tables: int, rows: int) -> str:
    """``tables`` tables with an index each and ``rows`` rows in all."""
    per_table = max(1, rows // tables)
    lines = []
    for n in range(1, tables + 1):
        lines.append(
            f"CREATE TABLE t{n} (id serial PRIMARY KEY, name text NOT NULL, v int, "
            f"created timestamptz DEFAULT now());\n"
            f"CREATE INDEX t{n}_v ON t{n} (v);\n"
            f"INSERT INTO t{n} (name, v) SELECT 'row ' || g, g FROM generate_series(1, "
            f"{per_table}) g;"
        )
    return "\n".join(lines) + "\n"


def inner_session(folder: Path, test: str, env: dict[str, str]) -> dict[str, Any]:
    (folder / "conftest.py").write_text(TIMING_CONFTEST)
    (folder / "test_bench.py").write_text(test)
    times = folder / "times.json"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--run-services", "-p", "no:cacheprovider"],
        cwd=folder,
        env={**os.environ, **env, "BENCH_TIMES": str(times)},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    result: dict[str, Any] = json.loads(times.read_text())
    return result


def by_hand(folder: Path, data: Path) -> float:
    """Copy a ready data directory and start ``postgres`` on it until a client connects."""
    import psycopg

    server = pg_server.get_server()
    account = pg_server.account()
    start = time.perf_counter()
    target = folder / "data"
    shutil.copytree(data, target)
    run_dir = folder / "run"
    run_dir.mkdir()
    kwargs: dict[str, Any] = {}
    if account is not None:
        for path in (folder, target, run_dir):
            os.chown(path, account.uid, account.gid)
        for parent, dirs, files in os.walk(target):
            for name in dirs + files:
                os.lchown(os.path.join(parent, name), account.uid, account.gid)
        kwargs = account.popen_kwargs(folder)
    os.chmod(target, 0o700)
    process = subprocess.Popen(
        [server.program("postgres"), *server.arguments(str(target), str(run_dir), 5432)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **kwargs,
    )
    try:
        while True:
            try:
                psycopg.connect(f"host={run_dir} port=5432 user=postgres dbname=postgres").close()
                break
            except psycopg.OperationalError:
                time.sleep(0.001)
        return time.perf_counter() - start
    finally:
        process.terminate()
        process.wait()


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.2f} ms" if values else "       —"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="sessions started each way")
    parser.add_argument("--resets", type=int, default=20, help="resets of each kind")
    parser.add_argument("--big-tables", type=int, default=500, help="0 leaves it out")
    parser.add_argument("--peer-venv", default=DEFAULT_PEER_VENV, help="pytest-postgresql's")
    parser.add_argument("--peer-user", default="postgres", help="who runs it when we are root")
    parser.add_argument("--skip-peer", action="store_true", help="leave pytest-postgresql out")
    options = parser.parse_args()
    user = peer_user(options.peer_user)
    peer = None if options.skip_peer else ensure_peer_venv(Path(options.peer_venv), user)
    pg_ctl = pg_server.get_server().program("pg_ctl")
    work = Path(tempfile.mkdtemp(prefix="bench-pg-", dir=memory_root(tempfile.gettempdir())))
    os.chmod(work, 0o711)
    env = {"PYTEST_SERVICES_CACHE_DIR": str(work / "cache")}
    small = work / "small.sql"
    small.write_text(schema(20, 1000))
    starts: dict[str, list[float]] = {"by hand": [], "empty": [], "no spare": [], "prepared": []}
    rss: list[tuple[int, ...]] = []
    # "no spare": an empty database copied from the cache entry itself, as the first session
    # after a build does (PYTEST_SERVICES_SPARE_COPIES=0).
    for kind, tables in (("empty", 0), ("no spare", 0), ("prepared", 20)):
        for n in range(options.rounds + 1):
            folder = work / f"{kind}-{n}"
            folder.mkdir()
            rss_file = folder / "rss"
            times = inner_session(
                folder,
                START_TEST,
                {
                    **env,
                    "PYTEST_SERVICES_SPARE_COPIES": "0" if kind == "no spare" else "",
                    "BENCH_TABLES": str(tables),
                    "BENCH_SQL": str(small),
                    "BENCH_RSS": str(rss_file),
                },
            )
            if n:  # the first one fills the cache
                starts[kind].append(times["setup"][0])
                rss.append(tuple(int(kb) for kb in rss_file.read_text().split()))
            print(f"start {kind} {n}", file=sys.stderr)
    cache = work / "cache" / "postgresql"
    ready = next(
        p for p in cache.iterdir() if p.is_dir() and "-state-" in p.name and p.name[0] != "."
    )
    for n in range(options.rounds):
        folder = work / f"hand-{n}"
        folder.mkdir()
        starts["by hand"].append(by_hand(folder, ready / "data"))
        shutil.rmtree(folder, ignore_errors=True)
    peer_starts = peer_ready(peer, user, work, pg_ctl, options.rounds) if peer else []
    print("\nReady (median of", options.rounds, "sessions):")
    for name, values in starts.items():
        print(f"  {name:10} {median_ms(values)}")
    hand = statistics.median(starts["by hand"])
    print(f"  empty / by hand    {statistics.median(starts['empty']) / hand:.2f}x")
    print(
        "  prepared / empty   "
        f"{statistics.median(starts['prepared']) / statistics.median(starts['empty']):.2f}x"
    )
    rss_sum = statistics.median(kb[0] for kb in rss) / 1024
    pss_sum = statistics.median(kb[1] for kb in rss) / 1024
    print(f"  server memory: RSS summed over its processes {rss_sum:.1f} MiB, PSS {pss_sum:.1f}")
    if peer_starts:
        print_ready(starts["empty"], starts["by hand"], peer_starts)

    for tables in (20, options.big_tables):
        if not tables:
            continue
        sql = work / f"schema-{tables}.sql"
        sql.write_text(schema(tables, 1000 if tables == 20 else tables * 10))
        folder = work / f"reset-{tables}"
        folder.mkdir()
        test = RESET_TEST.format(changes=CHANGES, resets=options.resets)
        times = inner_session(
            folder, test, {**env, "BENCH_TABLES": str(tables), "BENCH_SQL": str(sql)}
        )
        order = [kind for _ in range(options.resets) for kind in CHANGES] + ["nothing"]
        after: dict[str, list[float]] = {kind: [] for kind in CHANGES}
        cleans = [seconds for _name, seconds in times["clean"]]
        for step in range(1, len(cleans)):
            after[order[step - 1]].append(cleans[step])
        ours = per_reset(times, list(CHANGES), options.resets)
        theirs = None
        if peer:
            theirs = peer_resets(
                peer, user, work / f"peer-reset-{tables}", pg_ctl, sql, CHANGES, options.resets
            )
        print_resets(tables, after, ours, theirs)
        for label, key in (
            ("the limit: pg_current_wal_insert_lsn() on an open connection", "limit"),
            ("transaction per test: BEGIN + ROLLBACK of one table's rows", "rollback"),
        ):
            print(f"  {label:64} {median_ms(times[key])}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
