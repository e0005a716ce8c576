"""``mysql_clean`` against what other connections leave behind: locks, pending DDL, globals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mysql_support
import pytest
from mysql_clean_support import SCHEMA, make_project, run
from mysql_support import needs_server

pytest.importorskip("MySQLdb", reason="mysqlclient is not installed")

pytestmark = needs_server


@pytest.fixture(scope="module")
def base_cache() -> Iterator[Path]:
    """A cache folder with the server's base entry, built once for this file."""
    yield from mysql_support.base_cache("test-clean-")


@pytest.fixture
def project(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, base_cache: Path
) -> pytest.Pytester:
    return make_project(pytester, monkeypatch, base_cache, SCHEMA)


PENDING_ALTER = """
import pytest
from conftest import connect, in_thread, signature, wait_until_waiting

EXPECTED = {}
LEFT = []  # what the even steps leave running

def test_prepared(mysql_socket, mysql_clean):
    EXPECTED.update(signature(mysql_socket))

@pytest.mark.parametrize("step", range(2 * ROUNDS))
def test_step(step, mysql_socket, mysql_clean):
    assert signature(mysql_socket) == EXPECTED
    if step % 2 == 0:  # leave an ALTER waiting behind an open transaction
        reader = connect(mysql_socket)
        reader.autocommit(False)
        reader.cursor().execute("SELECT COUNT(*) FROM t")  # holds t's metadata lock
        alter = connect(mysql_socket)
        LEFT[:] = [reader, alter, in_thread(alter, "ALTER TABLE t ADD COLUMN extra INT")]
        wait_until_waiting(mysql_socket, "ALTER TABLE t%")
    else:  # the ALTER has ended, one way or the other, and changed nothing
        LEFT[2].join(60)
        assert not LEFT[2].is_alive()
        assert signature(mysql_socket) == EXPECTED
"""

#: Pairs of tests per inner session.
ROUNDS = 25


@pytest.mark.slow
def test_a_pending_alter_never_reaches_the_next_test(project: pytest.Pytester) -> None:
    project.makepyfile(test_pending=PENDING_ALTER.replace("ROUNDS", str(ROUNDS)))
    run(project, "-v").assert_outcomes(passed=1 + 2 * ROUNDS)


HANGS = """
import pytest
from conftest import connect, in_thread, rows, signature, wait_until_waiting

EXPECTED = {}
LEFT = []

def test_prepared(mysql_socket, mysql_clean):
    EXPECTED.update(signature(mysql_socket))

def touch_x(mysql_socket):
    \"\"\"What the next test does with x, waiting 10 s at most for a lock (a day by default).\"\"\"
    connection = connect(mysql_socket, init_command="SET SESSION lock_wait_timeout = 10, "
                         "innodb_lock_wait_timeout = 10")
    connection.cursor().execute("UPDATE x SET id = id + 10")
    connection.cursor().execute("UPDATE x SET id = id - 10")
    connection.close()
    assert signature(mysql_socket) == EXPECTED

def test_write_lock_of_an_idle_connection(mysql_socket, mysql_clean):
    connection = connect(mysql_socket)
    connection.cursor().execute("LOCK TABLES x WRITE")  # changes no row
    LEFT.append(connection)

def test_after_the_write_lock(mysql_socket, mysql_clean):
    touch_x(mysql_socket)

def test_read_lock_and_a_queued_writer(mysql_socket, mysql_clean):
    reader, writer = connect(mysql_socket), connect(mysql_socket)
    reader.cursor().execute("LOCK TABLES x READ")
    LEFT.extend([reader, writer, in_thread(writer, "INSERT INTO x VALUES (3)")])
    wait_until_waiting(mysql_socket, "INSERT INTO x%")

def test_after_the_read_lock(mysql_socket, mysql_clean):
    touch_x(mysql_socket)

def test_prepared_xa_transaction(mysql_socket, mysql_clean):
    connection = connect(mysql_socket)
    for sql in ("XA START 'left'", "UPDATE x SET id = 5 WHERE id = 1", "XA END 'left'",
                "XA PREPARE 'left'"):
        connection.cursor().execute(sql)
    LEFT.append(connection)

def test_after_the_xa_transaction(mysql_socket, mysql_clean):
    touch_x(mysql_socket)

def test_prepared_xa_transaction_of_a_closed_connection(mysql_socket, mysql_clean):
    connection = connect(mysql_socket)
    for sql in ("XA START 'gone'", "UPDATE x SET id = 5 WHERE id = 1", "XA END 'gone'",
                "XA PREPARE 'gone'"):
        connection.cursor().execute(sql)
    connection.close()  # the prepared transaction stays, with its locks

def test_after_the_closed_xa_transaction(mysql_socket, mysql_clean):
    touch_x(mysql_socket)
    assert rows(mysql_socket, "XA RECOVER") == []
"""


def test_locks_left_by_idle_connections_are_ended(project: pytest.Pytester) -> None:
    project.makepyfile(test_hangs=HANGS)
    run(project, "-v").assert_outcomes(passed=9)


GLOBALS = """
from conftest import connect, rows, signature

EXPECTED = {}

def test_prepared(mysql_socket, mysql_clean):
    EXPECTED.update(signature(mysql_socket))
    assert EXPECTED["globals"][0][0] == "ROW"

def test_set_globals(mysql_socket, mysql_clean):
    connection = connect(mysql_socket)
    for sql in ("SET GLOBAL binlog_format = 'STATEMENT'", "SET GLOBAL sql_mode = ''",
                "SET GLOBAL time_zone = '+05:00'", "SET GLOBAL max_connections = 17"):
        connection.cursor().execute(sql)
    connection.close()
    connection = connect(mysql_socket)  # a new session takes the new binlog_format
    connection.cursor().execute("INSERT INTO t (name) VALUES ('c')")  # the trigger writes audit
    connection.cursor().execute("SELECT noted('by a function')")  # so does the function
    connection.close()

def test_globals_and_rows_are_back(mysql_socket, mysql_clean):
    assert signature(mysql_socket) == EXPECTED
    assert rows(mysql_socket, "SELECT @@global.max_connections") != [[17]]

def test_statement_format_of_one_session(mysql_socket, mysql_clean):
    connection = connect(mysql_socket)
    connection.cursor().execute("SET SESSION binlog_format = 'STATEMENT'")
    connection.cursor().execute("SELECT noted('by a function')")
    connection.close()

def test_rows_are_back(mysql_socket, mysql_clean):
    assert signature(mysql_socket) == EXPECTED
"""


def test_global_variables_are_put_back(project: pytest.Pytester) -> None:
    project.makepyfile(test_globals=GLOBALS)
    run(project, "-v").assert_outcomes(passed=5)


GETTER = """
import pytest
from conftest import connect, rows

@pytest.fixture(scope="session")
def archive(mysql_database_getter, mysql_socket):
    name = mysql_database_getter("archive")
    connect(mysql_socket, name).cursor().execute("CREATE TABLE kept (i INT)")
    return name

def test_first(mysql_socket, mysql_clean):
    pass

def test_archive_created_after_the_first_reset(archive, mysql_socket, mysql_clean):
    assert rows(mysql_socket, "SHOW TABLES", db=archive) == [["kept"]]

def test_archive_still_there(archive, mysql_socket, mysql_clean):
    assert rows(mysql_socket, "SHOW TABLES", db=archive) == [["kept"]]
"""


def test_databases_of_mysql_database_getter_survive_the_reset(project: pytest.Pytester) -> None:
    project.makepyfile(test_getter=GETTER)
    run(project, "-v").assert_outcomes(passed=3)
