"""A private MariaDB (or MySQL) server per session, over a unix socket.

    pytest examples/test_demo_mysql.py --run-services
    pytest examples/test_demo_mysql.py -n 2       # each worker gets its own server

The first session initialises a data directory into a per-user cache (about a second);
every later one starts from a copy of it in about a tenth of a second.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def db(mysql: Any, mysql_socket: str, mysql_database: str) -> Any:
    MySQLdb = pytest.importorskip("MySQLdb", reason="pip install 'pytest-services[mysql]'")
    connection = MySQLdb.connect(unix_socket=mysql_socket, user="root", db=mysql_database)
    yield connection
    connection.close()


def test_orders_total(db: Any) -> None:
    cursor = db.cursor()
    cursor.execute("CREATE TABLE orders (id INT PRIMARY KEY, amount DECIMAL(8, 2))")
    cursor.executemany("INSERT INTO orders VALUES (%s, %s)", [(1, "9.50"), (2, "0.50")])
    cursor.execute("SELECT SUM(amount) FROM orders")
    assert str(cursor.fetchone()[0]) == "10.00"


def test_time_zones_are_loaded(db: Any) -> None:
    cursor = db.cursor()
    cursor.execute("SELECT CONVERT_TZ('2024-07-01 12:00:00', 'UTC', 'Europe/Amsterdam')")
    assert str(cursor.fetchone()[0]) == "2024-07-01 14:00:00"


def test_more_databases(mysql_database_getter: Any, db: Any) -> None:
    name = mysql_database_getter("demo_archive")
    cursor = db.cursor()
    cursor.execute("SHOW DATABASES LIKE 'demo_archive'")
    assert cursor.fetchone() == (name,)


def test_a_clean_database(mysql_clean: None, db: Any) -> None:
    # mysql_clean: whatever an earlier test of this session created is gone again.
    cursor = db.cursor()
    cursor.execute("SHOW TABLES")
    assert cursor.fetchall() == ()
