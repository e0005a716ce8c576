"""The MySQL/MariaDB fixtures, against a real server started by inner pytest sessions."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mysql_support import MYSQL_DRIVERS
from proc_support import alive, processes_naming

from pytest_services._db import cache as cache_module
from pytest_services._db.mysql import cache as mysql_cache_module
from pytest_services._db.mysql import server as mysql_module
from pytest_services.folders import memory_root, private_dir
from pytest_services.process import ServiceError

if not MYSQL_DRIVERS:
    pytest.skip("neither mysqlclient nor PyMySQL is installed", allow_module_level=True)

try:
    SERVER: str | None = mysql_module.find_server_binary()
except ServiceError:
    SERVER = None
pytestmark = pytest.mark.skipif(
    SERVER is None, reason=f"no MySQL/MariaDB server: {mysql_module.INSTALL_HINT}"
)

FIXTURES = (
    "mysql_base_dir",
    "mysql_data_dir",
    "mysql_socket",
    "mysql_pid",
    "mysql_defaults_file",
    "mysql_system_database",
    "mysql_watcher",
    "mysql",
    "mysql_database_name",
    "mysql_database_getter",
    "mysql_database",
    "mysql_connection",
)

# Inner test sessions write what they saw to report-<worker>.json in their folder.
REPORTER = """
import json, os

import pytest
from pytest_services._db.mysql.driver import module

MySQLdb = module()


def connect(socket, db=None):
    kwargs = {"db": db} if db else {}
    return MySQLdb.connect(unix_socket=socket, user="root", **kwargs)


def query(socket, sql, db=None):
    connection = connect(socket, db)
    try:
        cursor = connection.cursor()
        cursor.execute(sql)
        return cursor.fetchall()
    finally:
        connection.close()


@pytest.fixture
def report(worker_id):
    data = {}
    yield data
    with open(f"report-{worker_id}.json", "w") as out:
        json.dump(data, out, default=str)
"""


def _in_memory() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="test-mysql-", dir=memory_root(tempfile.gettempdir())))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def memory_dir() -> Iterator[Path]:
    """A fresh folder in memory, like the plugin's own cache (building on disk is slower)."""
    yield from _in_memory()


@pytest.fixture(scope="session")
def session_memory_dir() -> Iterator[Path]:
    """A folder in memory for the whole test session."""
    yield from _in_memory()


@pytest.fixture(scope="session")
def shared_cache(session_memory_dir: Path) -> Path:
    """A cache folder with one complete entry, built once for the whole test session."""
    assert SERVER is not None
    cache = session_memory_dir / "cache"
    mysql_cache = private_dir(cache / "mysql")
    server = mysql_module.MySQLServer(SERVER, mysql_module._server_version(SERVER, mysql_cache))
    mysql_cache_module.cached_data_dir(server, mysql_cache, logging.getLogger(__name__))
    return cache


@pytest.fixture
def inner(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, shared_cache: Path
) -> pytest.Pytester:
    """The pytester, with the reporter conftest and the shared cache."""
    monkeypatch.setenv(mysql_module.CACHE_DIR_ENV, str(shared_cache))
    monkeypatch.delenv(mysql_module.SERVER_ENV, raising=False)
    pytester.makeconftest(REPORTER)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--run-services", "-p", "no:cacheprovider", *args)


def report(pytester: pytest.Pytester, worker: str = "local") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((pytester.path / f"report-{worker}.json").read_text())
    return data


def entries(cache: Path) -> list[Path]:
    """The initialised data directories in a cache folder."""
    return sorted(
        p for p in (cache / "mysql").iterdir() if p.is_dir() and not p.name.startswith(".")
    )


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "mysql").iterdir() if p.name.startswith("."))


def test_default_database_tables(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        from conftest import connect, query

        def test_it(mysql, mysql_database, mysql_socket, mysql_system_database, report):
            connection = connect(mysql_socket, mysql_database)
            cursor = connection.cursor()
            cursor.execute("CREATE TABLE item (id INT PRIMARY KEY, name VARCHAR(20))")
            cursor.executemany("INSERT INTO item VALUES (%s, %s)", [(1, "one"), (2, "two")])
            connection.commit()
            cursor.execute("SELECT name FROM item ORDER BY id")
            report["names"] = [row[0] for row in cursor.fetchall()]
            connection.close()
            report["database"] = mysql_database
            users = query(mysql_socket, "SELECT COUNT(*) FROM user", mysql_system_database)
            report["users"] = users[0][0]
            report["networking"] = query(mysql_socket, "SELECT @@skip_networking")[0][0]
            report["pid"] = mysql.pid
        """
    )
    run(inner).assert_outcomes(passed=1)
    seen = report(inner)
    assert seen["names"] == ["one", "two"]
    assert seen["database"] == "pytest_services_test"
    assert seen["users"] >= 1
    assert seen["networking"] == 1
    assert not alive(seen["pid"])


def test_paths_defaults_file_and_connection_url(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import os
        from urllib.parse import parse_qs, urlsplit
        from conftest import query

        def test_it(mysql_connection, mysql_socket, mysql_pid, mysql_data_dir, mysql_base_dir,
                    mysql_defaults_file, run_dir, memory_temp_dir, report):
            url = urlsplit(mysql_connection)
            assert (url.scheme, url.username, url.hostname) == ("mysql", "root", "localhost")
            assert parse_qs(url.query) == {"unix_socket": [mysql_socket], "charset": ["utf8"]}
            assert os.path.dirname(mysql_socket) == run_dir
            assert os.path.dirname(mysql_pid) == run_dir
            assert mysql_data_dir.startswith(mysql_base_dir + os.sep)
            assert mysql_base_dir.startswith(memory_temp_dir + os.sep)
            assert oct(os.stat(mysql_base_dir).st_mode & 0o777) == "0o700"
            with open(mysql_pid) as pid_file:
                report["pid_file"] = int(pid_file.read())
            report["defaults"] = open(mysql_defaults_file).read()
            (datadir, socket), = query(mysql_socket, "SELECT @@datadir, @@socket")
            assert os.path.realpath(datadir) == os.path.realpath(mysql_data_dir)
            assert socket == mysql_socket
            report["base"] = mysql_base_dir
        """
    )
    run(inner).assert_outcomes(passed=1)
    seen = report(inner)
    assert "[mysqld]" in seen["defaults"]
    assert "skip-networking" in seen["defaults"]
    assert not alive(seen["pid_file"])
    assert not os.path.exists(seen["base"])


def test_more_databases_from_the_getter(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        from conftest import query

        def test_it(mysql_database_getter, mysql_socket, report):
            assert mysql_database_getter("extra_one") == "extra_one"
            assert mysql_database_getter("extra_one") == "extra_one"  # exists: no error
            assert mysql_database_getter("odd-name`x") == "odd-name`x"
            query(mysql_socket, "CREATE TABLE t (i INT)", "odd-name`x")
            report["databases"] = [row[0] for row in query(mysql_socket, "SHOW DATABASES")]
        """
    )
    run(inner).assert_outcomes(passed=1)
    databases = report(inner)["databases"]
    assert {"extra_one", "odd-name`x", "mysql"} <= set(databases)
    assert "test" not in databases


def test_time_zone_tables_are_loaded(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        from conftest import query

        def test_it(mysql, mysql_socket, report):
            sql = "SELECT CONVERT_TZ('2024-01-01 12:00:00', 'UTC', 'Europe/Amsterdam')"
            report["amsterdam"] = query(mysql_socket, sql)[0][0]
        """
    )
    run(inner).assert_outcomes(passed=1)
    assert report(inner)["amsterdam"] == "2024-01-01 13:00:00"


def test_database_name_overridden_in_conftest(inner: pytest.Pytester) -> None:
    inner.makeconftest(
        REPORTER
        + """
@pytest.fixture(scope="session")
def mysql_database_name():
    return "my_project_tests"
"""
    )
    inner.makepyfile(
        """
        from conftest import query

        def test_it(mysql, mysql_database, mysql_socket, report):
            report["name"] = mysql_database
            report["current"] = query(mysql_socket, "SELECT DATABASE()", mysql_database)[0][0]
        """
    )
    run(inner).assert_outcomes(passed=1)
    assert report(inner) == {"name": "my_project_tests", "current": "my_project_tests"}


def test_services_off_gives_none(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        def test_it(mysql_watcher, mysql, mysql_database, mysql_database_getter,
                    mysql_connection, mysql_defaults_file, mysql_database_name):
            assert mysql_watcher is None
            assert mysql is None
            assert mysql_database is None
            assert mysql_database_getter is None
            assert mysql_connection is None
            assert mysql_defaults_file is None
            assert mysql_database_name == "pytest_services_test"
        """
    )
    inner.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


@pytest.mark.slow
def test_xdist_workers_get_their_own_servers_from_a_cold_cache(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, memory_dir: Path
) -> None:
    pytest.importorskip("xdist")
    cache = memory_dir / "cold"
    monkeypatch.setenv(mysql_module.CACHE_DIR_ENV, str(cache))
    inner.makepyfile(
        """
        from conftest import query

        def test_it(mysql, mysql_socket, mysql_pid, mysql_database, report):
            query(mysql_socket, "CREATE TABLE mine (i INT)", mysql_database)
            report["socket"] = mysql_socket
            report["pid_file"] = query(mysql_socket, "SELECT @@pid_file")[0][0]
            report["pid"] = mysql.pid
            report["tables"] = query(mysql_socket, "SHOW TABLES", mysql_database)
        """
    )
    # Both workers find the cache empty at the same moment and must agree on one entry.
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--dist", "each")
    result.assert_outcomes(passed=2)
    first, second = report(inner, "gw0"), report(inner, "gw1")
    assert first["socket"] != second["socket"]
    assert first["pid_file"] != second["pid_file"]
    assert first["pid"] != second["pid"]
    assert first["tables"] == second["tables"] == [["mine"]]
    assert len(entries(cache)) == 1
    assert leftovers(cache) == []
    assert not alive(first["pid"]) and not alive(second["pid"])


TOUCH_SERVER = """
def test_it(mysql):
    pass
"""


@pytest.mark.slow
def test_cold_then_warm_cache(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, memory_dir: Path
) -> None:
    cache = memory_dir / "cache"
    monkeypatch.setenv(mysql_module.CACHE_DIR_ENV, str(cache))
    # Entries of other servers: one unused for long (removed), one in use (kept).
    old, recent = cache / "mysql" / "mariadb-0.0.1-old", cache / "mysql" / "mysql-0.0.2-recent"
    for other in (old, recent):
        (other / "data").mkdir(parents=True)
        (other / cache_module.MARKER).write_text("{}")
    long_ago = time.time() - (cache_module.UNUSED_ENTRY_DAYS + 1) * 86400
    os.utime(old / cache_module.MARKER, (long_ago, long_ago))
    inner.makepyfile(TOUCH_SERVER)
    result = run(inner, "--log-level=INFO", "-rA")
    result.assert_outcomes(passed=1)
    assert "initialising a" in result.stdout.str()
    (entry, kept) = entries(cache)
    assert kept == recent
    assert (entry / cache_module.MARKER).is_file()
    assert oct(cache.stat().st_mode & 0o777) == "0o700"
    (entry / "sentinel").touch()  # still there if the entry is reused

    result = run(inner, "--log-level=INFO", "-rA")
    result.assert_outcomes(passed=1)
    assert entries(cache) == [entry, recent]
    assert (entry / "sentinel").exists()
    assert "initialising" not in result.stdout.str()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated file", "missing marker", "half-built leftover"])
def test_damaged_cache_entry_is_rebuilt(
    inner: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    memory_dir: Path,
    shared_cache: Path,
    damage: str,
) -> None:
    cache = memory_dir / "cache"
    shutil.copytree(shared_cache, cache)
    monkeypatch.setenv(mysql_module.CACHE_DIR_ENV, str(cache))
    (entry,) = entries(cache)
    (entry / "sentinel").touch()  # gone once the entry is rebuilt
    if damage == "truncated file":
        # A server started from this would not even start.
        (entry / "data" / "ibdata1").write_bytes(b"")
    elif damage == "missing marker":
        (entry / cache_module.MARKER).unlink()
    else:
        (cache / "mysql" / f".build-{entry.name}-crashed").mkdir()
        (entry / cache_module.MARKER).write_text("{")

    inner.makepyfile(
        """
        from conftest import query

        def test_it(mysql, mysql_socket, report):
            report["users"] = query(mysql_socket, "SELECT COUNT(*) FROM mysql.global_priv")[0][0]
        """
    )
    run(inner).assert_outcomes(passed=1)
    assert report(inner)["users"] >= 1
    assert entries(cache) == [entry]
    assert not (entry / "sentinel").exists()
    assert cache_module.CacheEntry(entry.name, str(entry)).is_complete()
    assert leftovers(cache) == []


def test_server_found_outside_path(inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # Debian puts mariadbd in /usr/sbin, which ordinary users do not have on PATH.
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    inner.makepyfile(TOUCH_SERVER)
    run(inner).assert_outcomes(passed=1)


@pytest.mark.parametrize("wanted", ["/nowhere/mariadbd", "no-such-mariadbd"])
def test_missing_server_binary_names_the_package(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, wanted: str
) -> None:
    monkeypatch.setenv(mysql_module.SERVER_ENV, wanted)
    inner.makepyfile(TOUCH_SERVER)
    result = run(inner)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*{wanted}*not found*mariadb-server*"])


def test_failed_initialisation_is_reported(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, memory_dir: Path
) -> None:
    assert SERVER is not None
    bin_dir = inner.path / "bin"  # on disk: /dev/shm may be mounted noexec
    bin_dir.mkdir()
    (bin_dir / "mariadbd").symlink_to(SERVER)
    install_db = bin_dir / "mariadb-install-db"
    install_db.write_text("#!/bin/sh\necho preparing\necho 'disk on fire' >&2\nexit 3\n")
    install_db.chmod(0o755)
    (bin_dir / "mysqld").symlink_to(install_db)  # in case the server is a MySQL one
    cache = memory_dir / "cache"
    monkeypatch.setenv(mysql_module.CACHE_DIR_ENV, str(cache))
    monkeypatch.setenv(mysql_module.SERVER_ENV, str(bin_dir / "mariadbd"))
    inner.makepyfile(TOUCH_SERVER)
    result = run(inner)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*data directory failed: Command exited with code 3.",
            f"*command: {install_db} --no-defaults --datadir=*",
            "*disk on fire*",
        ]
    )
    assert entries(cache) == []
    assert leftovers(cache) == []


def test_missing_client_library_skips(inner: pytest.Pytester) -> None:
    inner.makeconftest(
        "import sys\n"
        "sys.modules['MySQLdb'] = sys.modules['pymysql'] = None  # as if not installed\n"
    )
    inner.makepyfile(TOUCH_SERVER)
    result = run(inner, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["*mysqlclient (MySQLdb) or PyMySQL: pip install 'pytest-services[[]mysql[]]'*"]
    )


@pytest.mark.skipif("pymysql" not in MYSQL_DRIVERS, reason="PyMySQL is not installed")
def test_pymysql_serves_without_mysqlclient(inner: pytest.Pytester) -> None:
    inner.makeconftest("import sys\nsys.modules['MySQLdb'] = None  # as if not installed\n")
    inner.makepyfile(
        """
        import pymysql

        def test_it(mysql, mysql_socket, mysql_database, mysql_url, mysql_clean):
            assert mysql_url.startswith(f"mysql+pymysql://root@/{mysql_database}?unix_socket=")
            connection = pymysql.connect(unix_socket=mysql_socket, user="root",
                                         database=mysql_database)
            connection.cursor().execute("CREATE TABLE t (i INT)")
            connection.close()

        def test_cleaned(mysql_socket, mysql_database, mysql_clean):
            connection = pymysql.connect(unix_socket=mysql_socket, user="root",
                                         database=mysql_database)
            cursor = connection.cursor()
            cursor.execute("SHOW TABLES")
            assert cursor.fetchall() == ()
        """
    )
    run(inner).assert_outcomes(passed=2)


def test_fixtures_are_listed_with_docstrings(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures")
    text = result.stdout.str()
    for name in FIXTURES:
        assert f"\n{name} [session scope]" in text, name
    result.stdout.fnmatch_lines(["mysql_database_getter [[]session scope[]]*", "    Function *"])


def test_killed_pytest_leaves_no_cache_build_running(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, memory_dir: Path
) -> None:
    # The real install-db, followed by a hang, as when the bootstrap server never ends.
    assert SERVER is not None
    real_install_db = mysql_module._require_tool(
        mysql_module.MySQLServer(SERVER, ""), ("mariadb-install-db", "mysql_install_db")
    )
    bin_dir = inner.path / "bin"  # on disk: /dev/shm may be mounted noexec
    bin_dir.mkdir()
    (bin_dir / "mariadbd").symlink_to(SERVER)
    install_db = bin_dir / "mariadb-install-db"
    install_db.write_text(f'#!/bin/sh\n{real_install_db} "$@"\nsleep 600\n')
    install_db.chmod(0o755)
    monkeypatch.setenv(mysql_module.SERVER_ENV, str(bin_dir / "mariadbd"))
    cache = memory_dir / "killed-build"
    monkeypatch.setenv(mysql_module.CACHE_DIR_ENV, str(cache))
    inner.makepyfile(TOUCH_SERVER)
    pytest_process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "--run-services",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
        ],
        cwd=inner.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (builders := processes_naming(str(cache))):
            assert pytest_process.poll() is None, "pytest ended before building the cache"
            assert time.monotonic() < deadline, "the cache build never started"
            time.sleep(0.005)
    finally:
        pytest_process.kill()
        pytest_process.wait()
    deadline = time.monotonic() + 15
    while processes_naming(str(cache)) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = processes_naming(str(cache))
    for pid in left:  # do not leave a hanging build behind for ten minutes
        with contextlib.suppress(OSError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
    assert builders and left == []
