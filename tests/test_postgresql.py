"""The PostgreSQL fixtures, against a real server started by inner pytest sessions."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from postgresql_support import (
    REPORTER,
    in_memory,
    kill_once_written,
    left_alive,
    needs_server,
    report,
    run,
    server_uid,
    use_cache,
)
from proc_support import alive

from pytest_services._db.postgresql import server as pg_server
from pytest_services.exceptions import PostgreSQLError

pytest.importorskip("psycopg", reason="psycopg is not installed")
pytestmark = needs_server

FIXTURES = (
    "postgresql",
    "postgresql_base_dir",
    "postgresql_data_dir",
    "postgresql_database",
    "postgresql_database_getter",
    "postgresql_database_name",
    "postgresql_dsn",
    "postgresql_host",
    "postgresql_init",
    "postgresql_listen_tcp",
    "postgresql_port",
    "postgresql_url",
    "postgresql_watcher",
    "do_postgresql_clean",
)


@pytest.fixture(scope="module")
def shared_cache() -> Iterator[Path]:
    """A cache folder for the module: built by the first inner session, used by the rest."""
    yield from in_memory("test-pg-")


@pytest.fixture
def inner(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, shared_cache: Path
) -> pytest.Pytester:
    use_cache(monkeypatch, shared_cache)
    pytester.makeconftest(REPORTER)
    return pytester


def test_server_runs_on_a_socket_only_and_clients_connect(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import os
        import psycopg
        import sqlalchemy
        from conftest import children_of, query

        def test_it(postgresql, postgresql_dsn, postgresql_url, postgresql_host,
                    postgresql_port, postgresql_data_dir, postgresql_base_dir, report):
            with psycopg.connect(postgresql_dsn) as connection:
                report["who"] = connection.execute(
                    "SELECT current_user, current_database()").fetchone()
                report["settings"] = {
                    name: connection.execute(f"SHOW {name}").fetchone()[0]
                    for name in ("listen_addresses", "fsync", "data_directory",
                                 "unix_socket_directories", "port", "config_file",
                                 "dynamic_shared_memory_type")
                }
            engine = sqlalchemy.create_engine(postgresql_url)
            with engine.connect() as connection:
                report["sqlalchemy"] = connection.execute(
                    sqlalchemy.text("SELECT current_database()")).scalar()
            engine.dispose()
            report["host"], report["port"] = postgresql_host, postgresql_port
            report["data_dir"], report["base"] = postgresql_data_dir, postgresql_base_dir
            report["pid"] = postgresql.pid
            report["uid"] = os.stat(postgresql_data_dir).st_uid
            with open(f"/proc/{postgresql.pid}/status") as status:
                report["status"] = status.read()
            report["children"] = children_of(postgresql.pid)
        """
    )
    run(inner).assert_outcomes(passed=1)
    seen = report(inner)
    assert seen["who"] == ["postgres", "pytest_services_test"]
    assert seen["sqlalchemy"] == "pytest_services_test"
    settings = seen["settings"]
    assert settings["listen_addresses"] == ""
    assert settings["fsync"] == "off"
    assert settings["dynamic_shared_memory_type"] == "mmap"  # in the data dir: no leftovers
    assert settings["data_directory"] == seen["data_dir"]
    assert settings["unix_socket_directories"] == seen["host"]
    assert settings["port"] == str(seen["port"])
    assert f"\nUid:\t{server_uid()}\t" in seen["status"]
    assert seen["children"] and not any(map(alive, seen["children"]))
    assert seen["uid"] == server_uid()
    assert not alive(seen["pid"])
    assert not os.path.exists(seen["base"])


def test_more_databases_from_the_getter_and_another_name(inner: pytest.Pytester) -> None:
    inner.makeconftest(
        REPORTER
        + """
@pytest.fixture(scope="session")
def postgresql_database_name():
    return "my_project_tests"
"""
    )
    inner.makepyfile(
        """
        from conftest import query

        def test_it(postgresql_database_getter, postgresql_database, postgresql_dsn, report):
            assert postgresql_database_getter("extra_one") == "extra_one"
            assert postgresql_database_getter("extra_one") == "extra_one"  # exists: no error
            assert postgresql_database_getter('odd "name') == 'odd "name'
            report["databases"] = query(postgresql_dsn, "SELECT datname FROM pg_database")
            report["name"] = postgresql_database
            report["current"] = query(postgresql_dsn, "SELECT current_database()")
        """
    )
    run(inner).assert_outcomes(passed=1)
    seen = report(inner)
    assert {"extra_one", 'odd "name', "my_project_tests"} <= {row[0] for row in seen["databases"]}
    assert seen["name"] == "my_project_tests"
    assert seen["current"] == [["my_project_tests"]]


def test_services_off_gives_none(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        def test_it(postgresql_watcher, postgresql, postgresql_database, postgresql_dsn,
                    postgresql_database_getter, postgresql_url, postgresql_host,
                    postgresql_port, postgresql_base_dir, postgresql_database_name):
            assert postgresql_watcher is None and postgresql is None
            assert postgresql_database is None and postgresql_database_getter is None
            assert postgresql_dsn is None and postgresql_url is None
            assert postgresql_host is None and postgresql_port is None
            assert postgresql_base_dir is None
            assert postgresql_database_name == "pytest_services_test"
        """
    )
    inner.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_listen_tcp_when_asked(inner: pytest.Pytester) -> None:
    inner.makeconftest(
        REPORTER
        + """
@pytest.fixture(scope="session")
def postgresql_listen_tcp():
    return True
"""
    )
    inner.makepyfile(
        """
        from conftest import query

        def test_it(postgresql, postgresql_port, postgresql_database, report):
            dsn = f"host=127.0.0.1 port={postgresql_port} user=postgres"
            report["seen"] = query(dsn, "SELECT inet_server_addr()::text")
        """
    )
    run(inner).assert_outcomes(passed=1)
    assert report(inner)["seen"] == [["127.0.0.1/32"]]


@pytest.mark.slow
def test_xdist_workers_get_their_own_servers(inner: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    inner.makepyfile(
        """
        import time
        import pytest
        from conftest import query

        @pytest.mark.parametrize("n", range(9))
        def test_it(n, postgresql, postgresql_dsn, postgresql_host, worker_id, report):
            query(postgresql_dsn, f"CREATE TABLE IF NOT EXISTS mine_{worker_id} (i int)")
            report["host"] = postgresql_host
            report["pid"] = postgresql.pid
            report["tables"] = query(postgresql_dsn, "SELECT tablename FROM pg_tables "
                                     "WHERE schemaname = 'public'")
            time.sleep(0.1)  # every worker gets a test
        """
    )
    run(inner, "-n", "3").assert_outcomes(passed=9)
    seen = {n: report(inner, f"gw{n}") for n in range(3)}
    assert len({item["host"] for item in seen.values()}) == 3
    assert len({item["pid"] for item in seen.values()}) == 3
    for n, item in seen.items():  # each worker saw only its own table
        assert item["tables"] == [[f"mine_gw{n}"]]
    assert not any(alive(item["pid"]) for item in seen.values())


def test_killed_pytest_leaves_no_server(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import time

        def test_it(postgresql, postgresql_base_dir):
            with open("server.txt", "w") as out:
                out.write(f"{postgresql.pid} {postgresql_base_dir}")
            time.sleep(600)
        """
    )
    text, group = kill_once_written(inner, "server.txt")
    base = text.split(" ", 1)[1]
    assert left_alive(group, base) == []
    assert not os.path.exists(base)


def test_a_socket_path_too_long_is_refused_with_the_fix(
    inner: pytest.Pytester, tmp_path: Path
) -> None:
    deep = tmp_path / ("d" * 60)
    inner.makeconftest(
        REPORTER
        + f"""
@pytest.fixture(scope="session")
def memory_root_dir():
    import os
    os.makedirs({str(deep)!r}, exist_ok=True)
    return {str(deep)!r}
"""
    )
    inner.makepyfile("def test_it(postgresql):\n    pass\n")
    result = run(inner)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*The socket path */.s.PGSQL.* is longer than 107 bytes*override memory_root_dir*"]
    )


def test_missing_server_names_the_package(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(pg_server.BINDIR_ENV, str(tmp_path / "nothing"))
    inner.makepyfile("def test_it(postgresql):\n    pass\n")
    result = run(inner)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*PostgreSQLError*nothing*apt-get install postgresql*"])


def test_find_bindir_prefers_the_newest_and_names_the_package_when_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folders = []
    for version in ("9.6", "15", "13"):
        folder = tmp_path / "postgresql" / version / "bin"
        folder.mkdir(parents=True)
        (folder / "postgres").write_text("#!/bin/sh\n")
        (folder / "postgres").chmod(0o755)
        folders.append(str(folder))
    monkeypatch.delenv(pg_server.BINDIR_ENV, raising=False)
    assert pg_server.find_bindir(folders) == folders[1]
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(pg_server, "DEBIAN_BINDIRS", str(tmp_path / "none" / "*"))
    with pytest.raises(PostgreSQLError, match=r"apt-get install postgresql"):
        pg_server.find_bindir()


def test_readiness_needs_our_own_child(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    checker = pg_server.postmaster_checker(str(data_dir))
    assert not checker()  # no pid file
    lines = ["", str(data_dir), "0", "5432", "/tmp", "", "0", "ready", ""]
    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)
    child = subprocess.Popen(["sleep", "30"])
    try:
        lines[0] = str(os.getppid())  # ready, but not a child of ours
        (data_dir / "postmaster.pid").write_text("\n".join(lines))
        assert not checker()
        lines[0] = str(child.pid)
        (data_dir / "postmaster.pid").write_text("\n".join(lines).replace("ready", "starting"))
        assert not checker()
        (data_dir / "postmaster.pid").write_text("\n".join(lines))
        assert checker()
    finally:
        for process in (stranger, child):
            process.kill()
            process.wait()


def test_fixtures_are_listed_with_docstrings(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures")
    text = result.stdout.str()
    for name in FIXTURES:
        assert f"\n{name} [session scope]" in text, name
    result.stdout.fnmatch_lines(["postgresql_clean -- *", "    Put the default database *"])


def test_a_server_that_died_is_noticed_at_the_next_setup(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import os, signal, time

        def test_kill(postgresql, postgresql_data_dir):
            with open(f"{postgresql_data_dir}/postmaster.pid") as pid_file:
                shmid = pid_file.read().split("\\n")[6].split()[1]
            with open("shmid.txt", "w") as out:
                out.write(shmid)
            os.kill(postgresql.pid, signal.SIGKILL)
            while os.waitpid(postgresql.pid, os.WNOHANG) == (0, 0):
                time.sleep(0.01)
            postgresql.returncode = -9

        def test_next(postgresql):
            pass
        """
    )
    result = run(inner)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_next*",
            "service 'postgres' (pid *) exited with code -9 (SIGKILL)*during*test_kill*",
            "*database system is ready to accept connections",
        ]
    )
    # The server could not remove its System V segment: the teardown did, once unused.
    shmid = (inner.path / "shmid.txt").read_text()
    with open("/proc/sysvipc/shm") as table:
        assert shmid not in [line.split()[1] for line in table.readlines()[1:]]
