"""A private PostgreSQL server per session, over a unix socket, reset before each test.

    pytest examples/test_demo_postgresql.py --run-services
    pytest examples/test_demo_postgresql.py -n 2       # each worker gets its own server

The first session initialises a cluster into a per-user cache; every later one starts from
a copy of it. Run as root, the server runs as the ``postgres`` account.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def db(postgresql_dsn: str, postgresql_clean: None) -> Iterator[Any]:
    psycopg = pytest.importorskip("psycopg", reason="pip install 'pytest-services[postgresql]'")
    with psycopg.connect(postgresql_dsn, autocommit=True) as connection:
        yield connection


def test_orders_total(db: Any) -> None:
    db.execute("CREATE TABLE orders (id serial PRIMARY KEY, amount numeric(8, 2))")
    db.execute("INSERT INTO orders (amount) VALUES (9.50), (0.50)")
    assert str(db.execute("SELECT sum(amount) FROM orders").fetchone()[0]) == "10.00"


def test_each_test_starts_from_an_empty_database(db: Any) -> None:
    tables = db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
    assert tables.fetchone()[0] == 0


def test_sqlalchemy(postgresql_url: str) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    engine = sqlalchemy.create_engine(postgresql_url)
    with engine.connect() as connection:
        assert connection.execute(sqlalchemy.text("SHOW listen_addresses")).scalar() == ""
    engine.dispose()
