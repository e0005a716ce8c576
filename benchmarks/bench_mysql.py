"""How fast a test session gets a MySQL/MariaDB server, and gets rid of it.

    python benchmarks/bench_mysql.py [--runs N] [--cold-runs N] [--pytest-mysql-venv DIR]

Compares, in one run and on this machine:

* pytest-services with a warm cache (the usual case) and with a cold one (first session
  after the server was installed or upgraded), measured inside real pytest sessions: the
  setup of a test that uses the ``mysql`` fixture, and the teardown that stops the server;
* the bare minimum done by hand: ``mariadb-install-db`` then ``mariadbd``, until a client
  connects (no time zone tables), and a clean shutdown;
* pytest-mysql, installed into its own virtual environment (created if missing).

Needs mysqlclient in the running interpreter, and pytest-services importable from it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

TIMING_CONFTEST = """
import json, os, time

import pytest

_times = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    start = time.perf_counter()
    yield
    _times["setup"] = time.perf_counter() - start


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    start = time.perf_counter()
    yield
    _times["teardown"] = time.perf_counter() - start
    with open(os.environ["BENCH_TIMES"], "w") as out:
        json.dump(_times, out)
"""

SERVICES_TEST = """
def test_query(mysql, mysql_socket, mysql_database):
    import MySQLdb

    connection = MySQLdb.connect(unix_socket=mysql_socket, user="root", db=mysql_database)
    connection.cursor().execute("SELECT 1")
    connection.close()
"""

PYTEST_MYSQL_TEST = """
def test_query(mysql):
    mysql.cursor().execute("SELECT 1")
"""


@dataclass
class Row:
    name: str
    setups: list[float] = field(default_factory=list)
    teardowns: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def setup(self) -> float:
        return statistics.median(self.setups)

    @property
    def teardown(self) -> float:
        return statistics.median(self.teardowns)


def memory_folder() -> str:
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


def run_session(
    python: str, folder: Path, args: list[str], env: dict[str, str]
) -> dict[str, float]:
    times = folder / "times.json"
    times.unlink(missing_ok=True)
    result = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=folder,
        env={**os.environ, **env, "BENCH_TIMES": str(times)},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0 or not times.exists():
        sys.exit(f"inner pytest session failed in {folder}:\n{result.stdout}\n{result.stderr}")
    data: dict[str, float] = json.loads(times.read_text())
    return data


def session_folder(test: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="bench-mysql-"))
    (folder / "conftest.py").write_text(TIMING_CONFTEST)
    (folder / "test_query.py").write_text(textwrap.dedent(test))
    return folder


def bench_services(runs: int, cold_runs: int) -> list[Row]:
    folder = session_folder(SERVICES_TEST)
    args = ["--run-services"]
    warm_cache = tempfile.mkdtemp(prefix="bench-mysql-cache-", dir=memory_folder())
    cold, warm = Row("pytest-services, cold cache"), Row("pytest-services, warm cache")
    try:
        for _ in range(cold_runs):
            cache = tempfile.mkdtemp(prefix="bench-mysql-cache-", dir=memory_folder())
            try:
                times = run_session(
                    sys.executable, folder, args, {"PYTEST_SERVICES_CACHE_DIR": cache}
                )
            finally:
                shutil.rmtree(cache, ignore_errors=True)
            cold.setups.append(times["setup"])
            cold.teardowns.append(times["teardown"])
        env = {"PYTEST_SERVICES_CACHE_DIR": warm_cache}
        run_session(sys.executable, folder, args, env)  # fills the cache
        for _ in range(runs):
            times = run_session(sys.executable, folder, args, env)
            warm.setups.append(times["setup"])
            warm.teardowns.append(times["teardown"])
    finally:
        shutil.rmtree(warm_cache, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
    cold.note = "init + time zones + start"
    warm.note = "copy + start, time zones included"
    return [warm, cold]


def find(name: str) -> str:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    found = shutil.which(name, path=path)
    if found is None:
        sys.exit(f"{name} not found: install the Debian package mariadb-server")
    return found


def bench_by_hand(runs: int) -> Row:
    """``mariadb-install-db`` and ``mariadbd`` with the fewest options that work."""
    import MySQLdb

    install_db, server = find("mariadb-install-db"), find("mariadbd")
    row = Row("by hand: install-db + mariadbd", note="no time zones, clean shutdown")
    for _ in range(runs):
        folder = tempfile.mkdtemp(prefix="bench-mysql-hand-", dir=memory_folder())
        data, socket = os.path.join(folder, "data"), os.path.join(folder, "mysql.sock")
        try:
            start = time.perf_counter()
            subprocess.run(
                [
                    install_db,
                    "--no-defaults",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                    f"--datadir={data}",
                ],
                check=True,
                capture_output=True,
            )
            command = [server, "--no-defaults", f"--datadir={data}", f"--socket={socket}"]
            command += ["--skip-networking", f"--pid-file={folder}/mysql.pid"]
            if os.geteuid() == 0:
                command.append("--user=root")
            process = subprocess.Popen(
                command,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            while True:
                try:
                    MySQLdb.connect(unix_socket=socket, user="root").close()
                    break
                except MySQLdb.Error:
                    if process.poll() is not None:
                        sys.exit("mariadbd started by hand exited")
                    time.sleep(0.005)
            row.setups.append(time.perf_counter() - start)
            start = time.perf_counter()
            process.send_signal(signal.SIGTERM)
            process.wait()
            row.teardowns.append(time.perf_counter() - start)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return row


def pytest_mysql_python(venv: Path) -> str:
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} with pytest-mysql ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "pytest-mysql", "PyMySQL"], check=True
        )
    return str(python)


def pytest_mysql(venv: Path) -> tuple[str, str, list[str]]:
    """pytest-mysql's interpreter, version, and the options that run it on MariaDB."""
    python = pytest_mysql_python(venv)
    version = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('pytest-mysql'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    args = [
        "-p",
        "no:services",
        "--mysql-dbname=bench",
        f"--mysql-mysqld={find('mariadbd')}",
        f"--mysql-mysqld-safe={find('mysqld_safe')}",
        f"--mysql-admin={find('mysqladmin')}",
        f"--mysql-install-db={find('mariadb-install-db')}",
    ]
    return python, version, args


def bench_pytest_mysql(runs: int, venv: Path) -> Row:
    python, version, args = pytest_mysql(venv)
    folder = session_folder(PYTEST_MYSQL_TEST)
    row = Row(f"pytest-mysql {version}", note="install-db every session, no time zones")
    try:
        for _ in range(runs):
            times = run_session(python, folder, args, {})
            row.setups.append(times["setup"])
            row.teardowns.append(times["teardown"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return row


def print_table(rows: list[Row], reference: Row) -> None:
    base = reference.setup + reference.teardown
    header = (
        f"{'variant':36} {'runs':>4} {'setup':>8} {'teardown':>9} {'total':>8} {'ratio':>6}  note"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        total = row.setup + row.teardown
        print(
            f"{row.name:36} {len(row.setups):>4} {row.setup:>7.3f}s {row.teardown:>8.3f}s "
            f"{total:>7.3f}s {total / base:>5.1f}x  {row.note}"
        )
    print("\nmedians; ratio = total / total of the warm pytest-services session")


def add_pytest_mysql_options(parser: argparse.ArgumentParser) -> None:
    """``--pytest-mysql-venv`` and ``--no-pytest-mysql``."""
    parser.add_argument(
        "--pytest-mysql-venv",
        type=Path,
        default=Path(tempfile.gettempdir(), "bench-pytest-mysql"),
        help="virtual environment with pytest-mysql, created if missing",
    )
    parser.add_argument("--no-pytest-mysql", action="store_true", help="skip pytest-mysql")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="sessions per variant (default 10)")
    parser.add_argument("--cold-runs", type=int, default=3, help="cold-cache sessions (default 3)")
    add_pytest_mysql_options(parser)
    options = parser.parse_args()

    warm, cold = bench_services(options.runs, options.cold_runs)
    rows = [warm, cold, bench_by_hand(options.runs)]
    if not options.no_pytest_mysql:
        rows.append(bench_pytest_mysql(options.runs, options.pytest_mysql_venv))
    print_table(rows, warm)


if __name__ == "__main__":
    main()
