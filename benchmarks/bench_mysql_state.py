"""What a prepared MySQL state and ``mysql_clean`` cost, against pytest-mysql.

    python benchmarks/bench_mysql_state.py [--steps N] [--runs N] [--pytest-mysql-venv DIR]

On a reference schema of 20 InnoDB tables with two secondary indexes each and 1000 seed rows
in all, in one run on this machine:

* ``mysql_clean`` before each test, median per test, after a test that changed nothing,
  one that changed rows in one table, and one that created, altered or dropped a table
  (``--steps`` tests, a third of each, in a real pytest session);
* in the same session, the limit of any reset: the cheapest query that tells whether
  anything was written (``SHOW MASTER STATUS``, one round trip on an open connection);
  and what a framework's transactional test case pays instead (pytest-django's ``db``):
  ``START TRANSACTION`` before the test and ``ROLLBACK`` of its row changes after it, on
  the connection the test writes through (DDL cannot be rolled back in MySQL);
* how long a session waits for its server, warm cache: with the schema and rows prepared
  by ``mysql_init``, and with an empty database (``--runs`` sessions each);
* pytest-mysql's function-scoped ``mysql`` fixture doing the same job the usual way: it
  creates the database before each test, the test loads the schema and rows, and the
  fixture drops the database after it.

Needs mysqlclient (or PyMySQL) in the running interpreter, and pytest-services importable
from it.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import textwrap
from pathlib import Path

from bench_mysql import add_pytest_mysql_options, memory_folder, pytest_mysql, run_session

TABLES = 20
ROWS = 50  # per table: 1000 in all


def reference_schema() -> str:
    """20 InnoDB tables with indexes, 1000 rows."""
    lines = []
    for table in range(TABLES):
        lines.append(
            f"CREATE TABLE t{table:02} (id INT AUTO_INCREMENT PRIMARY KEY, "
            "name VARCHAR(64) NOT NULL, value INT NOT NULL, created DATETIME NOT NULL, "
            "KEY by_name (name), KEY by_value (value, created)) ENGINE=InnoDB;"
        )
        rows = ", ".join(
            f"('row {n}', {n * 7 % 100}, '2024-01-01 00:00:00' + INTERVAL {n} HOUR)"
            for n in range(ROWS)
        )
        lines.append(f"INSERT INTO t{table:02} (name, value, created) VALUES {rows};")
    return "\n".join(lines) + "\n"


CLEAN_CONFTEST = """
import json, os
from pathlib import Path
import pytest
from pytest_services.mysql import MySQLInit

@pytest.fixture(scope="session")
def mysql_init():
    return MySQLInit(load=[Path("schema.sql")])

def pytest_sessionfinish(session):
    from test_clean import TIMES
    with open(os.environ["BENCH_TIMES"], "w") as out:
        json.dump(TIMES, out)
"""

CLEAN_TEST = """
import itertools, os, time
import pytest
from pytest_services._db.mysql.driver import module

MySQLdb = module()
TIMES = {"nothing": [], "rows": [], "ddl": [], "limit": [], "rollback": []}
LAST = ["first"]
KEPT = {}


def kept(socket, database, autocommit):
    # One connection kept open for the session, as a framework's test case keeps its own.
    if autocommit not in KEPT:
        KEPT[autocommit] = MySQLdb.connect(
            unix_socket=socket, user="root", db=database, autocommit=autocommit
        )
    return KEPT[autocommit]
DDL = itertools.cycle([
    "CREATE TABLE extra (i INT PRIMARY KEY, j INT)",
    "ALTER TABLE t07 ADD COLUMN note VARCHAR(20)",
    "DROP TABLE t11",
])

@pytest.mark.parametrize("step", range(int(os.environ["BENCH_STEPS"])))
def test_step(step, request, mysql, mysql_socket, mysql_database):
    started = time.perf_counter()
    request.getfixturevalue("mysql_clean")
    if LAST[0] in TIMES:
        TIMES[LAST[0]].append(time.perf_counter() - started)
    kind = ("nothing", "rows", "ddl")[step % 3]
    connection = MySQLdb.connect(unix_socket=mysql_socket, user="root", db=mysql_database)
    cursor = connection.cursor()
    cursor.execute("SELECT COUNT(*) FROM t05")
    assert cursor.fetchone()[0] == 50
    if kind == "rows":
        cursor.execute("UPDATE t05 SET value = value + 1 WHERE id <= 10")
        cursor.execute("INSERT INTO t05 (name, value, created) VALUES ('new', 1, NOW())")
    elif kind == "ddl":
        cursor.execute(next(DDL))
    connection.commit()
    connection.close()
    LAST[0] = kind
    # The limit: the cheapest question that tells whether anything was written since.
    limit = kept(mysql_socket, mysql_database, True).cursor()
    started = time.perf_counter()
    limit.execute("SHOW MASTER STATUS")
    limit.fetchall()
    TIMES["limit"].append(time.perf_counter() - started)


@pytest.mark.parametrize("step", range(int(os.environ["BENCH_STEPS"]) // 3))
def test_rollback(step, mysql, mysql_socket, mysql_database):
    # What a framework's transactional test case pays: BEGIN before, ROLLBACK after, on a
    # connection the test itself writes through (rows only: DDL commits implicitly).
    connection = kept(mysql_socket, mysql_database, False)
    cursor = connection.cursor()
    started = time.perf_counter()
    cursor.execute("START TRANSACTION")
    begun = time.perf_counter()
    cursor.execute("UPDATE t05 SET value = value + 1 WHERE id <= 10")
    cursor.execute("INSERT INTO t05 (name, value, created) VALUES ('new', 1, NOW())")
    done = time.perf_counter()
    connection.rollback()
    TIMES["rollback"].append(begun - started + time.perf_counter() - done)
    cursor.execute("SELECT COUNT(*) FROM t05")
    assert cursor.fetchone()[0] == 50
    connection.rollback()
"""

READY_CONFTEST = """
import json, os, time
from pathlib import Path
import pytest
from pytest_services.mysql import MySQLInit

@pytest.fixture(scope="session")
def mysql_init():
    return MySQLInit(load=[Path("schema.sql")]) if os.environ["BENCH_INIT"] == "1" else None

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    started = time.perf_counter()
    yield
    with open(os.environ["BENCH_TIMES"], "w") as out:
        json.dump({"setup": time.perf_counter() - started}, out)
"""

READY_TEST = """
def test_ready(mysql, mysql_database):
    pass
"""

PYTEST_MYSQL_CONFTEST = """
import json, os, time
import pytest

TIMES = []

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    started = time.perf_counter()
    yield
    TIMES.append(time.perf_counter() - started)

def pytest_sessionfinish(session):
    with open(os.environ["BENCH_TIMES"], "w") as out:
        json.dump({"per_test": TIMES[1:]}, out)  # the first pays for the server's start
"""

PYTEST_MYSQL_TEST = """
import os, pytest

STATEMENTS = [s for s in open("schema.sql").read().split(";\\n") if s.strip()]

@pytest.mark.parametrize("step", range(int(os.environ["BENCH_STEPS"])))
def test_step(step, mysql):
    cursor = mysql.cursor()
    for statement in STATEMENTS:
        cursor.execute(statement)
    mysql.commit()
    cursor.execute("SELECT COUNT(*) FROM t05")
    assert cursor.fetchone()[0] == 50
"""


def folder_with(files: dict[str, str]) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="bench-mysql-state-"))
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text))
    (folder / "schema.sql").write_text(reference_schema())
    return folder


def bench_clean(steps: int, cache: str) -> dict[str, list[float]]:
    folder = folder_with({"conftest.py": CLEAN_CONFTEST, "test_clean.py": CLEAN_TEST})
    env = {"BENCH_STEPS": str(steps), "PYTEST_SERVICES_CACHE_DIR": cache}
    try:
        return run_session(sys.executable, folder, ["--run-services"], env)  # type: ignore[return-value]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def bench_ready(runs: int, cache: str) -> dict[str, list[float]]:
    folder = folder_with({"conftest.py": READY_CONFTEST, "test_ready.py": READY_TEST})
    found: dict[str, list[float]] = {"empty": [], "prepared": []}
    try:
        for init, name in (("0", "empty"), ("1", "prepared")):
            env = {"BENCH_INIT": init, "PYTEST_SERVICES_CACHE_DIR": cache}
            run_session(sys.executable, folder, ["--run-services"], env)  # warms the cache
            for _ in range(runs):
                found[name].append(
                    run_session(sys.executable, folder, ["--run-services"], env)["setup"]
                )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return found


def bench_pytest_mysql(steps: int, venv: Path) -> tuple[str, list[float]]:
    python, version, args = pytest_mysql(venv)
    folder = folder_with({"conftest.py": PYTEST_MYSQL_CONFTEST, "test_load.py": PYTEST_MYSQL_TEST})
    try:
        times = run_session(python, folder, args, {"BENCH_STEPS": str(steps)})
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return version, times["per_test"]  # type: ignore[return-value]


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.2f} ms" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150, help="tests in the clean session")
    parser.add_argument("--runs", type=int, default=7, help="sessions per readiness case")
    add_pytest_mysql_options(parser)
    options = parser.parse_args()
    cache = tempfile.mkdtemp(prefix="bench-mysql-state-cache-", dir=memory_folder())
    try:
        print("mysql_clean per test ...", file=sys.stderr)
        clean = bench_clean(options.steps, cache)
        print("server readiness ...", file=sys.stderr)
        ready = bench_ready(options.runs, cache)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    other = None
    if not options.no_pytest_mysql:
        print("pytest-mysql ...", file=sys.stderr)
        other = bench_pytest_mysql(max(options.steps // 3, 10), options.pytest_mysql_venv)
    print(f"\nReference schema: {TABLES} InnoDB tables, {TABLES * ROWS} rows; medians\n")
    print(f"{'per test':60} {'time':>10}")
    print(f"{'mysql_clean, the previous test changed nothing':60} {ms(clean['nothing']):>10}")
    print(f"{'mysql_clean, it changed rows in one table':60} {ms(clean['rows']):>10}")
    print(f"{'mysql_clean, it created, altered or dropped a table':60} {ms(clean['ddl']):>10}")
    print(f"{'the limit: SHOW MASTER STATUS on an open connection':60} {ms(clean['limit']):>10}")
    label = "transaction per test: BEGIN + ROLLBACK of one table's rows"
    print(f"{label:60} {ms(clean['rollback']):>10}")
    if other is not None:
        label = f"pytest-mysql {other[0]}: create + load + drop per test"
        print(f"{label:60} {ms(other[1]):>10}")
    print(f"\n{'server ready for a session (warm cache)':60} {'time':>10}")
    print(f"{'empty default database':60} {ms(ready['empty']):>10}")
    print(f"{'schema and rows prepared by mysql_init':60} {ms(ready['prepared']):>10}")
    ratio = statistics.median(ready["prepared"]) / statistics.median(ready["empty"])
    print(f"{'prepared / empty':60} {ratio:>9.2f}x")


if __name__ == "__main__":
    main()
