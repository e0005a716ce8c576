"""Prepared MySQL states (``mysql_init``), ``mysql_clean`` and ``mysql_url``, on real MariaDB."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mysql_support
import pytest
from mysql_support import MYSQL_DRIVERS, needs_server
from proc_support import processes_naming

from pytest_services._db.mysql import server as mysql_module
from pytest_services.folders import memory_root
from pytest_services.mysql import MySQLInit, hash_files

if not MYSQL_DRIVERS:
    pytest.skip("neither mysqlclient nor PyMySQL is installed", allow_module_level=True)

pytestmark = needs_server

SCHEMA = """\
-- A small shop: foreign keys with cascades, a generated column, a trigger, a view and a
-- procedure written without DELIMITER, as the mysql client takes them.
CREATE TABLE customers (
    id INT AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(50) NOT NULL,
    UNIQUE KEY (name)
) ENGINE=InnoDB;
CREATE TABLE orders (
    id INT AUTO_INCREMENT PRIMARY KEY,
    customer_id INT NOT NULL,
    amount DECIMAL(8, 2) NOT NULL,
    doubled DECIMAL(9, 2) AS (amount * 2) VIRTUAL,
    FOREIGN KEY (customer_id) REFERENCES customers (id) ON DELETE CASCADE
) ENGINE=InnoDB;
CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(100)) ENGINE=InnoDB;
CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW
    INSERT INTO audit (note) VALUES (CONCAT('order ', NEW.id));
CREATE VIEW big_orders AS SELECT id, amount FROM orders WHERE amount > 100;
CREATE PROCEDURE add_customer(IN new_name VARCHAR(50))
    INSERT INTO customers (name) VALUES (new_name);
INSERT INTO customers (name) VALUES ('ada'), ('bob'), ('gone');
DELETE FROM customers WHERE name = 'gone';
INSERT INTO orders (customer_id, amount) VALUES (1, 50), (1, 150), (2, 20);
"""

SEED = """
import os
from pytest_services._db.mysql.driver import module
MySQLdb = module()

def seed(socket, database):
    with open(os.environ["SEED_CALLS"], "a") as calls:
        calls.write("seed\\n")
    connection = MySQLdb.connect(unix_socket=socket, user="root", db=database)
    connection.cursor().execute("INSERT INTO customers (name) VALUES ('cy')")
    connection.commit()
    connection.close()
"""

CONFTEST = """
import pytest
from pytest_services._db.mysql.driver import module
MySQLdb = module()
from pathlib import Path
from pytest_services.mysql import MySQLInit

@pytest.fixture(scope="session")
def mysql_init():
    return MySQLInit(load=[Path("schema.sql"), "seed:seed"])

def connect(socket, db=None, **kwargs):
    return MySQLdb.connect(unix_socket=socket, user="root", **({"db": db} if db else {}),
                           **kwargs)

def signature(socket, db):
    \"\"\"Everything mysql_clean promises to restore, counters included.\"\"\"
    connection = connect(socket)
    cursor = connection.cursor()
    cursor.execute("SHOW DATABASES")
    found = {"databases": sorted(name for (name,) in cursor.fetchall())}
    if db not in found["databases"]:
        return found
    cursor.execute(f"USE `{db}`")
    cursor.execute("SHOW FULL TABLES")
    found["tables"] = sorted(cursor.fetchall())
    for name, kind in found["tables"]:
        if kind == "BASE TABLE":
            cursor.execute(f"SHOW CREATE TABLE `{name}`")
            found[f"{name}:create"] = cursor.fetchone()[1]
            cursor.execute(f"SELECT * FROM `{name}` ORDER BY 1")
            found[f"{name}:rows"] = [[str(value) for value in row] for row in cursor]
    cursor.execute("SHOW TRIGGERS")
    found["triggers"] = sorted(row[0] for row in cursor.fetchall())
    cursor.execute("SELECT ROUTINE_NAME FROM information_schema.ROUTINES "
                   "WHERE ROUTINE_SCHEMA = %s", (db,))
    found["routines"] = sorted(name for (name,) in cursor.fetchall())
    connection.close()
    return found
"""


@pytest.fixture(scope="session")
def base_cache() -> Iterator[Path]:
    """A cache folder with the server's base entry, built once for this file."""
    yield from mysql_support.base_cache("test-state-")


@pytest.fixture
def shop(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, base_cache: Path
) -> pytest.Pytester:
    """An inner project with the shop schema, a seed callable, and a cache of its own."""
    cache = pytester.path / "cache"
    shutil.copytree(base_cache, cache, symlinks=True)
    monkeypatch.setenv(mysql_module.CACHE_DIR_ENV, str(cache))
    monkeypatch.delenv(mysql_module.SERVER_ENV, raising=False)
    monkeypatch.setenv("SEED_CALLS", str(pytester.path / "seed-calls"))
    pytester.makeconftest(CONFTEST)
    (pytester.path / "schema.sql").write_text(SCHEMA)
    (pytester.path / "seed.py").write_text(SEED)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--run-services", "-p", "no:cacheprovider", *args)


def seed_calls(pytester: pytest.Pytester) -> int:
    calls = pytester.path / "seed-calls"
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def state_entries(pytester: pytest.Pytester) -> list[str]:
    folder = pytester.path / "cache" / "mysql"
    return sorted(p.name for p in folder.glob("*-state-*") if p.is_dir())


def leftovers(pytester: pytest.Pytester) -> list[str]:
    """Hidden files of the cache but spare copies: what builds left behind."""
    folder = pytester.path / "cache" / "mysql"
    return sorted(
        p.name for p in folder.iterdir() if p.name[0] == "." and not p.name.startswith(".spare-")
    )


LOADED = """
import json, os
from conftest import connect

def test_loaded(mysql, mysql_socket, mysql_database, worker_id):
    cursor = connect(mysql_socket, mysql_database).cursor()
    cursor.execute("SELECT name FROM customers ORDER BY id")
    names = [name for (name,) in cursor.fetchall()]
    cursor.execute("SELECT COUNT(*), SUM(amount) FROM orders")
    orders = [str(value) for value in cursor.fetchone()]
    cursor.execute("SELECT COUNT(*) FROM audit")
    audit = cursor.fetchone()[0]
    with open(f"loaded-{worker_id}.json", "w") as out:
        json.dump({"names": names, "orders": orders, "audit": audit}, out)
"""


@pytest.mark.slow
def test_state_is_built_once_for_all_workers_and_runs(shop: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    shop.makepyfile(LOADED)
    result = run(shop, "-n", "3", "--dist", "each")
    result.assert_outcomes(passed=3)
    for worker in ("gw0", "gw1", "gw2"):
        loaded = json.loads((shop.path / f"loaded-{worker}.json").read_text())
        assert loaded == {"names": ["ada", "bob", "cy"], "orders": ["3", "220.00"], "audit": 3}
    assert seed_calls(shop) == 1
    run(shop, "-n", "2", "--dist", "each").assert_outcomes(passed=2)
    run(shop).assert_outcomes(passed=1)
    assert seed_calls(shop) == 1
    assert len(state_entries(shop)) == 1 and leftovers(shop) == []


def test_a_session_takes_the_spare_copy_of_the_state_its_predecessor_made(
    shop: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, base_cache: Path
) -> None:
    memory = Path(memory_root(str(shop.path)), f"test-state-spare-{os.getpid()}")
    shutil.copytree(base_cache, memory, symlinks=True)  # beside the session's copy
    monkeypatch.setenv(mysql_module.CACHE_DIR_ENV, str(memory))
    try:
        shop.makepyfile(LOADED)
        spares = []
        for _ in range(3):
            run(shop).assert_outcomes(passed=1)
            loaded = json.loads((shop.path / "loaded-local.json").read_text())
            assert loaded == {"names": ["ada", "bob", "cy"], "orders": ["3", "220.00"], "audit": 3}
            spares.append(sorted(p.name for p in (memory / "mysql").glob(".spare-*")))
        assert seed_calls(shop) == 1
        assert [len(names) for names in spares] == [1, 1, 1]
        assert len({names[0] for names in spares}) == 3  # each run took one and made one
    finally:
        shutil.rmtree(memory, ignore_errors=True)


@pytest.mark.slow
def test_a_changed_sql_file_rebuilds_the_state_once(shop: pytest.Pytester) -> None:
    shop.makepyfile(LOADED)
    run(shop).assert_outcomes(passed=1)
    with (shop.path / "schema.sql").open("a") as schema:
        schema.write("INSERT INTO customers (name) VALUES ('dee');\n")
    run(shop).assert_outcomes(passed=1)
    run(shop).assert_outcomes(passed=1)
    assert seed_calls(shop) == 2
    loaded = json.loads((shop.path / "loaded-local.json").read_text())
    assert loaded["names"] == ["ada", "bob", "dee", "cy"]
    assert len(state_entries(shop)) == 2 and leftovers(shop) == []


def test_a_failing_sql_file_is_named_with_its_line_and_statement(shop: pytest.Pytester) -> None:
    (shop.path / "schema.sql").write_text(
        SCHEMA + "-- the mistake:\nINSERT INTO customers (name)\n    VALUES ('x', 'y');\n"
    )
    shop.makepyfile(LOADED)
    result = run(shop)
    result.assert_outcomes(errors=1)
    line = SCHEMA.count("\n") + 2
    result.stdout.fnmatch_lines(
        [
            f"*MySQLInitError: The SQL file schema.sql failed at line {line}: ERROR 1136 *"
            "Column count doesn't match value count at row 1",
            "*statement:",
            "*INSERT INTO customers (name)",
            "*VALUES ('x', 'y');",
        ]
    )
    assert seed_calls(shop) == 0
    assert state_entries(shop) == [] and leftovers(shop) == []


def test_a_failing_callable_is_named(shop: pytest.Pytester) -> None:
    (shop.path / "seed.py").write_text("def seed(socket, database):\n    raise KeyError('sku')\n")
    shop.makepyfile(LOADED)
    result = run(shop)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*MySQLInitError: The MySQL loader seed:seed failed: KeyError: 'sku'"]
    )
    assert state_entries(shop) == [] and leftovers(shop) == []


CLEAN = """
import pytest
from conftest import connect, signature

EXPECTED = {}
OPEN = []  # connections the tests leave open

MUTATIONS = {
    "insert": ["INSERT INTO customers (name) VALUES ('eve')", "CALL add_customer('zed')"],
    "update": ["UPDATE orders SET amount = 1"],
    "delete with cascade": ["DELETE FROM customers WHERE name = 'ada'"],
    "truncate": ["TRUNCATE TABLE audit"],
    "insert firing the trigger": ["INSERT INTO orders (customer_id, amount) VALUES (2, 7)"],
    "new table": ["CREATE TABLE extra (i INT)", "INSERT INTO extra VALUES (1)"],
    "dropped table": ["SET foreign_key_checks = 0", "DROP TABLE orders"],
    "altered column": ["ALTER TABLE customers MODIFY name VARCHAR(200) NOT NULL"],
    "new column": ["ALTER TABLE orders ADD COLUMN note TEXT"],
    "new database": ["CREATE DATABASE scratch", "CREATE TABLE scratch.t (i INT)"],
    "views, triggers, routines": [
        "DROP VIEW big_orders", "CREATE VIEW v2 AS SELECT 1 AS one",
        "DROP TRIGGER orders_audit", "DROP PROCEDURE add_customer",
        "CREATE FUNCTION one() RETURNS INT RETURN 1",
    ],
    "dropped database": ["DROP DATABASE pytest_services_test"],
    "nothing": [],
    # After a reset that found nothing to do: a counter that moves without a trace in the log.
    "rolled back insert": ["INSERT INTO customers (name) VALUES ('ghost')"],
}


def test_prepared(mysql, mysql_socket, mysql_database, mysql_clean):
    EXPECTED.update(signature(mysql_socket, mysql_database))
    assert EXPECTED["customers:rows"] == [["1", "ada"], ["2", "bob"], ["4", "cy"]]
    assert "AUTO_INCREMENT=5" in EXPECTED["customers:create"]


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_mutation(mutation, mysql_socket, mysql_database, mysql_clean):
    assert signature(mysql_socket, mysql_database) == EXPECTED
    connection = connect(mysql_socket, mysql_database)
    for sql in MUTATIONS[mutation]:
        connection.cursor().execute(sql)
    if mutation.startswith("rolled back"):
        connection.rollback()
    else:
        connection.commit()
    assert signature(mysql_socket, mysql_database) != EXPECTED or mutation == "nothing"


def test_uncommitted_transaction_of_an_open_connection(mysql_socket, mysql_database, mysql_clean):
    assert signature(mysql_socket, mysql_database) == EXPECTED
    connection = connect(mysql_socket, mysql_database)
    connection.autocommit(False)
    connection.cursor().execute("UPDATE customers SET name = CONCAT(name, '!')")
    connection.cursor().execute("INSERT INTO audit (note) VALUES ('pending')")
    OPEN.append(connection)  # neither committed nor closed: its locks stay


def test_table_locked_by_an_idle_connection(mysql_socket, mysql_database, mysql_clean):
    assert signature(mysql_socket, mysql_database) == EXPECTED
    connection = connect(mysql_socket, mysql_database, autocommit=True)
    connection.cursor().execute("LOCK TABLES customers WRITE")
    connection.cursor().execute("DELETE FROM customers WHERE name = 'bob'")
    OPEN.append(connection)  # no transaction, but its table lock blocks the restore


def test_last(mysql_socket, mysql_database, mysql_clean):
    assert signature(mysql_socket, mysql_database) == EXPECTED
"""


@pytest.mark.slow
def test_mysql_clean_restores_the_prepared_state_after_anything(shop: pytest.Pytester) -> None:
    shop.makepyfile(CLEAN)
    result = run(shop, "-p", "no:randomly", "-v")
    result.assert_outcomes(passed=18)


def test_mysql_clean_without_init_empties_the_database(shop: pytest.Pytester) -> None:
    shop.makeconftest(
        CONFTEST.replace('return MySQLInit(load=[Path("schema.sql"), "seed:seed"])', "return None")
    )
    shop.makepyfile(
        """
        from conftest import connect, signature

        def test_fill(mysql_socket, mysql_database, mysql_clean):
            cursor = connect(mysql_socket, mysql_database).cursor()
            cursor.execute("CREATE TABLE t (i INT AUTO_INCREMENT PRIMARY KEY)")
            cursor.execute("INSERT INTO t VALUES ()")

        def test_empty(mysql_socket, mysql_database, mysql_clean):
            assert signature(mysql_socket, mysql_database)["tables"] == []
        """
    )
    run(shop).assert_outcomes(passed=2)


def test_do_mysql_clean_cleans_every_test_that_uses_the_server(shop: pytest.Pytester) -> None:
    shop.makeconftest(
        CONFTEST
        + """
@pytest.fixture(scope="session")
def do_mysql_clean():
    return True
"""
    )
    shop.makepyfile(
        """
        from conftest import connect

        def count(mysql_socket, mysql_database):
            cursor = connect(mysql_socket, mysql_database).cursor()
            cursor.execute("SELECT COUNT(*) FROM customers")
            return cursor.fetchone()[0]

        def test_one(mysql, mysql_socket, mysql_database):
            assert count(mysql_socket, mysql_database) == 3
            connection = connect(mysql_socket, mysql_database)
            connection.cursor().execute("DELETE FROM customers")
            connection.commit()

        def test_two(mysql_socket, mysql_database):
            assert count(mysql_socket, mysql_database) == 3
        """
    )
    run(shop).assert_outcomes(passed=2)


def test_do_mysql_clean_runs_where_an_autouse_fixture_would(shop: pytest.Pytester) -> None:
    # After the wider-scoped fixtures, before the test's own function-scoped ones; and only
    # in the tests that use the server.
    shop.makeconftest(
        CONFTEST
        + """
@pytest.fixture(scope="session")
def do_mysql_clean():
    return True

def add(mysql_socket, mysql_database, name):
    connection = connect(mysql_socket, mysql_database)
    connection.cursor().execute(f"INSERT INTO customers (name) VALUES ('{name}')")
    connection.commit()

@pytest.fixture(scope="module")
def module_row(mysql_socket, mysql_database):
    add(mysql_socket, mysql_database, "module")

@pytest.fixture
def function_row(mysql_socket, mysql_database):
    add(mysql_socket, mysql_database, "function")
"""
    )
    shop.makepyfile(
        """
        from conftest import connect

        def names(mysql_socket, mysql_database):
            cursor = connect(mysql_socket, mysql_database).cursor()
            cursor.execute("SELECT name FROM customers WHERE name IN ('module', 'function')")
            return sorted(row[0] for row in cursor.fetchall())

        def test_rows(module_row, function_row, mysql_socket, mysql_database, request):
            assert "_mysql_clean_when_asked" in request.fixturenames
            assert names(mysql_socket, mysql_database) == ["function"]

        def test_no_server(request):
            assert "_mysql_clean_when_asked" not in request.fixturenames
        """
    )
    run(shop).assert_outcomes(passed=2)


@pytest.mark.slow
def test_mysql_url_with_sqlalchemy(shop: pytest.Pytester) -> None:
    pytest.importorskip("sqlalchemy")
    shop.makepyfile(
        """
        import sqlalchemy
        from pytest_services._db.mysql.driver import url_scheme

        def test_url(mysql_url, mysql_database):
            assert url_scheme() in ("mysql+mysqldb", "mysql+pymysql")
            assert mysql_url.startswith(f"{url_scheme()}://root@/{mysql_database}?unix_socket=")
            engine = sqlalchemy.create_engine(mysql_url)
            with engine.begin() as connection:
                names = connection.execute(
                    sqlalchemy.text("SELECT name FROM customers ORDER BY id")
                ).scalars().all()
                charset = connection.execute(sqlalchemy.text("SELECT @@character_set_client"))
                assert charset.scalar() == "utf8mb4"
            assert names == ["ada", "bob", "cy"]
            engine.dispose()
        """
    )
    run(shop).assert_outcomes(passed=1)


def test_mysql_init_rejects_what_it_cannot_load() -> None:
    with pytest.raises(TypeError, match=r"load\[0\] is 'db/schema.sql': give a pathlib.Path"):
        MySQLInit(load=["db/schema.sql"])
    with pytest.raises(TypeError, match="takes a list of loaders, not one"):
        MySQLInit(load=Path("schema.sql"))  # type: ignore[arg-type]


def test_hash_files(tmp_path: Path) -> None:
    (tmp_path / "app" / "migrations").mkdir(parents=True)
    first = tmp_path / "app" / "migrations" / "0001_initial.py"
    first.write_text("one")
    key = hash_files("*/migrations/*.py", root=tmp_path)
    assert key == hash_files("**/migrations/*.py", root=tmp_path)
    first.write_text("two")
    assert hash_files("*/migrations/*.py", root=tmp_path) != key
    with pytest.raises(ValueError, match=r"no file under .* matches \['nothing/\*'\]"):
        hash_files("nothing/*", root=tmp_path)


def test_a_killed_pytest_leaves_no_state_build_running(shop: pytest.Pytester) -> None:
    (shop.path / "seed.py").write_text(
        "import os, time\n\n"
        "def seed(socket, database):\n"
        "    open(os.environ['SEED_CALLS'], 'a').close()\n"
        "    time.sleep(600)\n"
    )
    shop.makepyfile(LOADED)
    inner = subprocess.Popen(
        [sys.executable, "-m", "pytest", "--run-services", "-p", "no:cacheprovider"],
        cwd=shop.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (shop.path / "seed-calls").exists():
            assert inner.poll() is None, "pytest ended before the loader ran"
            assert time.monotonic() < deadline, "the loader never ran"
            time.sleep(0.01)
        builders = processes_naming(str(shop.path / "cache"))
        assert builders, "no server is preparing the state"
    finally:
        inner.kill()
        inner.wait()
    deadline = time.monotonic() + 15
    while processes_naming(str(shop.path / "cache")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_naming(str(shop.path / "cache")) == []


USES_SERVER = """
import pytest

@pytest.mark.parametrize("n", range(3))
def test_uses_the_server(mysql, n):
    pass
"""


def seed_with(shop: pytest.Pytester, body: str, **init: object) -> None:
    """Make ``seed:seed`` run ``body`` (after counting the call), and ``mysql_init`` take
    the extra keyword arguments ``init``."""
    (shop.path / "seed.py").write_text(
        "import os\nfrom pytest_services._db.mysql.driver import module\nMySQLdb = module()\n\n"
        "def seed(socket, database):\n"
        "    open(os.environ['SEED_CALLS'], 'a').write('seed\\n')\n"
        "    connection = MySQLdb.connect(unix_socket=socket, user='root', db=database)\n"
        + "".join(f"    {line}\n" for line in body.splitlines())
    )
    arguments = "".join(f", {name}={value!r}" for name, value in init.items())
    conftest = (shop.path / "conftest.py").read_text()
    (shop.path / "conftest.py").write_text(
        conftest.replace('"seed:seed"])', f'"seed:seed"]{arguments})')
    )


@pytest.mark.slow
def test_a_hanging_loader_is_stopped_at_its_timeout(shop: pytest.Pytester) -> None:
    seed_with(shop, "connection.cursor().execute('SELECT SLEEP(600)')", timeout=3)
    shop.makepyfile(USES_SERVER)
    started = time.monotonic()
    result = run(shop)
    assert time.monotonic() - started < 60
    result.assert_outcomes(passed=0, errors=3)
    result.stdout.fnmatch_lines(
        ["*Preparing the MySQL state took longer than 3 s and was stopped; give it more time*"]
    )
    assert seed_calls(shop) == 1
    assert state_entries(shop) == []
    assert processes_naming(str(shop.path / "cache")) == []


@pytest.mark.slow
def test_a_failing_loader_runs_once_per_run_under_xdist(shop: pytest.Pytester) -> None:
    seed_with(shop, "raise RuntimeError('migration 0042 broke')")
    shop.makepyfile(USES_SERVER)
    result = run(shop, "-n", "3")
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines(
        ["*MySQLInitError: The MySQL loader seed:seed failed: RuntimeError: migration 0042 broke"]
    )
    assert seed_calls(shop) == 1
    assert "(failed earlier in this run; not tried again)" in result.stdout.str()
    run(shop, "-n", "3").assert_outcomes(errors=3)
    assert seed_calls(shop) == 2  # a new run tries again


@pytest.mark.slow
def test_a_server_that_dies_while_preparing_is_named_with_its_log(
    shop: pytest.Pytester,
) -> None:
    seed_with(shop, "connection.cursor().execute('SHUTDOWN')")
    shop.makepyfile(USES_SERVER)
    result = run(shop, "-p", "no:randomly")
    result.assert_outcomes(errors=3)
    output = result.stdout.str()
    assert "The server preparing the MySQL state died after the loader seed:seed ran" in output
    (log,) = set(re.findall(r"its log: (/\S+\.log)$", output, re.MULTILINE))
    assert Path(log).is_file(), "the server's log was not kept"
    assert "Shutdown complete" in Path(log).read_text()


@pytest.mark.slow
def test_a_damaged_state_file_is_rebuilt(shop: pytest.Pytester) -> None:
    shop.makepyfile(USES_SERVER)
    run(shop).assert_outcomes(passed=3)
    (entry,) = state_entries(shop)
    state = shop.path / "cache" / "mysql" / entry / "state.json"
    json.loads(state.read_text())
    state.write_text(state.read_text()[:10])  # cut short: a crash, a full disk
    run(shop).assert_outcomes(passed=3)
    assert seed_calls(shop) == 2
    json.loads(state.read_text())


BODIES = """
import pytest

@pytest.mark.parametrize("n", range(3))
def test_uses_the_server(mysql, n):
    open(f"body-{n}", "w").close()

def test_plain():
    open("body-plain", "w").close()
"""


@pytest.mark.slow
def test_services_prepare_builds_the_state_once_and_runs_no_test(shop: pytest.Pytester) -> None:
    shop.makepyfile(BODIES)
    result = run(shop, "--services-prepare", "-n", "2", "-v")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "*--services-prepare runs in this process alone (-n 2 ignored)",
            "*= prepared states (--services-prepare) =*",
            "MySQL state mariadb-*-state-*: built (*s)",
            "*no tests ran*",
        ]
    )
    assert seed_calls(shop) == 1
    assert list(shop.path.glob("body-*")) == []
    run(shop, "-n", "2").assert_outcomes(passed=4)
    assert seed_calls(shop) == 1
    result = run(shop, "--services-prepare")
    result.stdout.fnmatch_lines(["MySQL state mariadb-*-state-*: already in the cache (*s)"])
    assert seed_calls(shop) == 1


def test_services_prepare_fails_with_the_loaders_error(shop: pytest.Pytester) -> None:
    seed_with(shop, "raise RuntimeError('migration 0042 broke')")
    shop.makepyfile(BODIES)
    result = run(shop, "--services-prepare")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*MySQLInitError: The MySQL loader seed:seed failed: RuntimeError: migration 0042 broke"]
    )
    assert state_entries(shop) == []
