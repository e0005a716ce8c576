"""The inner project that the ``mysql_clean`` tests run: a schema, and helpers for its tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pytest_services._db.mysql import server as mysql_server

SCHEMA = """\
CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20) NOT NULL) ENGINE=InnoDB;
CREATE TABLE x (id INT PRIMARY KEY) ENGINE=InnoDB;
CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(100)) ENGINE=InnoDB;
CREATE TRIGGER t_audit AFTER INSERT ON t FOR EACH ROW
    INSERT INTO audit (note) VALUES (CONCAT('t ', NEW.id));
DELIMITER //
CREATE FUNCTION noted(what VARCHAR(50)) RETURNS INT MODIFIES SQL DATA
BEGIN
    INSERT INTO audit (note) VALUES (what);
    RETURN 1;
END//
DELIMITER ;
CREATE SEQUENCE seq;
INSERT INTO t (name) VALUES ('a'), ('b');
INSERT INTO x VALUES (1), (2);
"""

CONFTEST = """
import threading, time
from pathlib import Path
import MySQLdb, pytest
from pytest_services.mysql import MySQLInit

DB = "pytest_services_test"

@pytest.fixture(scope="session")
def mysql_init():
    return MySQLInit(load=[Path("schema.sql")])

def connect(socket, db=DB, **kwargs):
    return MySQLdb.connect(unix_socket=socket, user="root", db=db, autocommit=True, **kwargs)

def rows(socket, sql, db=DB):
    connection = connect(socket, db)
    try:
        cursor = connection.cursor()
        cursor.execute(sql)
        return [list(row) for row in cursor.fetchall()]
    finally:
        connection.close()

def wait_until_waiting(socket, statement):
    \"\"\"Until a connection waits for a lock in ``statement`` (a LIKE pattern).\"\"\"
    deadline = time.monotonic() + 60
    while not rows(socket, "SELECT ID FROM information_schema.PROCESSLIST WHERE STATE LIKE "
                   f"'Waiting for%' AND INFO LIKE '{statement}'"):
        assert time.monotonic() < deadline, f"{statement} never waited"
        time.sleep(0.01)

def in_thread(connection, sql):
    \"\"\"Run ``sql`` on ``connection`` in a thread; return the thread.\"\"\"
    def run():
        try:
            connection.cursor().execute(sql)
        except MySQLdb.OperationalError:
            pass  # the reset ended the connection
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread

def signature(socket):
    \"\"\"What mysql_clean promises to put back, for tests to compare.\"\"\"
    found = {}
    for name in ("t", "x", "audit"):
        found[name] = rows(socket, f"SELECT * FROM `{name}` ORDER BY 1")
        found[name + ":create"] = rows(socket, f"SHOW CREATE TABLE `{name}`")
    found["seq"] = rows(socket, "SELECT * FROM seq")
    found["databases"] = rows(socket, "SHOW DATABASES")
    found["events"] = rows(socket, "SELECT EVENT_SCHEMA, EVENT_NAME FROM "
                                   "information_schema.EVENTS")
    found["users"] = rows(socket, "SELECT User, Host FROM mysql.user ORDER BY 1, 2")
    found["charset"] = rows(socket, "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME "
                                    f"FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{DB}'")
    found["globals"] = rows(socket, "SELECT @@global.binlog_format, @@global.sql_mode, "
                                    "@@global.time_zone, @@global.event_scheduler")
    return found
"""


def make_project(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, base_cache: Path, schema: str
) -> pytest.Pytester:
    """The inner project: ``schema`` prepared by ``mysql_init``, a cache of its own."""
    cache = pytester.path / "cache"
    shutil.copytree(base_cache, cache, symlinks=True)
    monkeypatch.setenv(mysql_server.CACHE_DIR_ENV, str(cache))
    monkeypatch.delenv(mysql_server.SERVER_ENV, raising=False)
    pytester.makeconftest(CONFTEST)
    (pytester.path / "schema.sql").write_text(schema)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """The inner session, tests in file order."""
    return pytester.runpytest_subprocess(
        "--run-services", "-p", "no:cacheprovider", "-p", "no:randomly", *args
    )
