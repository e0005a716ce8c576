"""``mysql_clean`` after tests that change what lies beside the rows, or what the reset uses."""

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
    yield from mysql_support.base_cache("test-clean-guards-")


@pytest.fixture
def project(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, base_cache: Path
) -> pytest.Pytester:
    return make_project(pytester, monkeypatch, base_cache, SCHEMA)


PUT_BACK = """
import time
from conftest import connect, rows, signature

EXPECTED = {}

def test_prepared(mysql_socket, mysql_clean):
    EXPECTED.update(signature(mysql_socket))

def run(mysql_socket, *statements):
    connection = connect(mysql_socket)
    for sql in statements:
        connection.cursor().execute(sql)
    connection.close()

def test_sequence(mysql_socket, mysql_clean):
    assert rows(mysql_socket, "SELECT NEXTVAL(seq), NEXTVAL(seq)") == [[1, 2]]

def test_sequence_again(mysql_socket, mysql_clean):
    assert signature(mysql_socket) == EXPECTED
    assert rows(mysql_socket, "SELECT NEXTVAL(seq)") == [[1]]

def test_event_with_the_scheduler_on(mysql_socket, mysql_clean):
    run(mysql_socket,
        "CREATE EVENT ticks ON SCHEDULE EVERY 1 SECOND DO INSERT INTO audit (note) VALUES ('tick')",
        "SET GLOBAL event_scheduler = ON")
    deadline = time.monotonic() + 60
    while not rows(mysql_socket, "SELECT * FROM audit WHERE note = 'tick'"):
        assert time.monotonic() < deadline
        time.sleep(0.05)

def test_no_event_writes_any_more(mysql_socket, mysql_clean):
    assert signature(mysql_socket) == EXPECTED
    time.sleep(1.5)  # an event that still ran would have written by now
    assert signature(mysql_socket) == EXPECTED

def test_users_and_charset(mysql_socket, mysql_clean):
    run(mysql_socket, "CREATE USER app@localhost IDENTIFIED BY 'secret'",
        "GRANT SELECT ON pytest_services_test.* TO app@localhost", "CREATE ROLE reader",
        "ALTER DATABASE pytest_services_test CHARACTER SET latin1")

def test_users_and_charset_are_back(mysql_socket, mysql_clean):
    assert signature(mysql_socket) == EXPECTED

def test_writes_to_the_template(mysql_socket, mysql_clean):
    run(mysql_socket, "UPDATE pytest_services_template.t SET name = 'spoilt'",
        "DELETE FROM pytest_services_template.audit")

def test_changes_t_after_the_template_was_written(mysql_socket, mysql_clean):
    assert signature(mysql_socket) == EXPECTED
    run(mysql_socket, "DELETE FROM t", "INSERT INTO audit (note) VALUES ('x')")

def test_t_comes_back_from_a_good_template(mysql_socket, mysql_clean):
    assert signature(mysql_socket) == EXPECTED

def test_drops_the_template(mysql_socket, mysql_clean):
    run(mysql_socket, "DROP DATABASE pytest_services_template")

def test_changes_rows_after_the_template_was_dropped(mysql_socket, mysql_clean):
    assert signature(mysql_socket) == EXPECTED
    run(mysql_socket, "DELETE FROM t", "DELETE FROM x", "SELECT NEXTVAL(seq)")

def test_rows_come_back_after_the_template_was_dropped(mysql_socket, mysql_clean):
    assert signature(mysql_socket) == EXPECTED

def test_reset_master(mysql_socket, mysql_clean):
    run(mysql_socket, "DELETE FROM t", "RESET MASTER", "DELETE FROM x")

def test_after_reset_master(mysql_socket, mysql_clean):
    assert signature(mysql_socket) == EXPECTED
"""


@pytest.mark.slow
def test_what_tests_change_beside_the_rows_is_put_back(project: pytest.Pytester) -> None:
    project.makepyfile(test_put_back=PUT_BACK)
    run(project, "-v").assert_outcomes(passed=15)


REFUSED = """
from conftest import connect, rows, signature

EXPECTED = {}

def run(mysql_socket, *statements):
    connection = connect(mysql_socket)
    for sql in statements:
        connection.cursor().execute(sql)
    connection.close()

def test_prepared(mysql_socket, mysql_clean):
    EXPECTED.update(signature(mysql_socket))

def test_grants_to_a_user_of_the_server(mysql_socket, mysql_clean):
    run(mysql_socket, "GRANT SELECT ON pytest_services_test.* TO `mariadb.sys`@localhost")

def test_after_the_grant(mysql_socket, mysql_clean):
    pass

def test_history(mysql_socket, mysql_clean):
    run(mysql_socket, "INSERT INTO versioned VALUES (2)")

def test_after_the_history(mysql_socket, mysql_clean):
    pass

def test_the_current_rows_are_back(mysql_socket, mysql_clean):
    assert signature(mysql_socket) == EXPECTED
    assert rows(mysql_socket, "SELECT * FROM versioned") == [[1]]
"""


def test_what_cannot_be_put_back_fails_the_next_test_naming_the_cause(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, base_cache: Path
) -> None:
    versioned = (
        "CREATE TABLE versioned (i INT) WITH SYSTEM VERSIONING;\n"
        "INSERT INTO versioned VALUES (1);\n"
    )
    project = make_project(pytester, monkeypatch, base_cache, SCHEMA + versioned)
    project.makepyfile(test_refused=REFUSED)
    result = run(project, "-v")
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_after_the_grant*",
            "*MySQLError: mysql_clean cannot put back the grants of `mariadb.sys`@`localhost`,"
            " changed by test_refused.py::test_grants_to_a_user_of_the_server: *",
            "*ERROR at setup of test_after_the_history*",
            "*MySQLError: mysql_clean cannot put back the history of the system-versioned table"
            " `versioned`, written by test_refused.py::test_history: its rows are back*",
        ]
    )


LOST = """
from conftest import connect, rows

def run(mysql_socket, *statements):
    connection = connect(mysql_socket)
    for sql in statements:
        connection.cursor().execute(sql)
    connection.close()

def test_prepared(mysql_socket, mysql_clean):
    pass

def test_template_and_table(mysql_socket, mysql_clean):
    run(mysql_socket, "DELETE FROM pytest_services_template.t", "DELETE FROM t")

def test_drops_every_database(mysql_socket, mysql_clean):
    for (name,) in rows(mysql_socket, "SHOW DATABASES"):
        if name not in ("mysql", "information_schema", "performance_schema", "sys"):
            run(mysql_socket, f"DROP DATABASE `{name}`")

def test_after(mysql_socket, mysql_clean):
    pass

def test_later(mysql_socket, mysql_clean):
    pass
"""


@pytest.mark.parametrize(
    ("culprit", "message"),
    [
        (
            "test_template_and_table",
            "changed both the table `t` and its copy in pytest_services_template: their prepared"
            " rows are lost for this session, and every later mysql_clean fails. Leave"
            " pytest_services_template alone*",
        ),
        (
            "test_drops_every_database",
            "dropped the database pytest_services_template, where mysql_clean keeps the prepared"
            " rows, and the tables `audit`, `seq`, `t`, `x`: their prepared rows are lost for"
            " this session, and every later mysql_clean fails. Leave pytest_services_template"
            " alone (a helper that drops every database must skip it).",
        ),
    ],
)
def test_lost_prepared_rows_fail_every_later_test_naming_the_cause(
    project: pytest.Pytester, culprit: str, message: str
) -> None:
    project.makepyfile(test_lost=LOST)
    result = run(project, "-v", "-k", f"prepared or {culprit} or after or later")
    result.assert_outcomes(passed=2, errors=2)
    for test in ("test_after", "test_later"):
        result.stdout.fnmatch_lines(
            [f"*ERROR at setup of {test}*", f"*MySQLError: test_lost.py::{culprit} {message}"]
        )
