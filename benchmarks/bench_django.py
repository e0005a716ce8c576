"""A Django project's pytest-django suite on MariaDB or PostgreSQL under ``pytest -n 2``.

    python benchmarks/bench_django.py [--runs N] [--engine mariadb|postgresql]

The project is ``tests/django_shop`` (4 apps, 30+ migrations, data migrations).  In one run
on this machine, ``--runs`` rounds in which the three ways take turns:

(a) pytest-django against one MariaDB server started outside pytest, as CI jobs do with a
    service container: every worker creates its test database and runs every migration;
(b) the same with ``--reuse-db`` (on databases of its own), measured on runs after the one
    that created the databases;
(c) this plugin (``services_django_db``), warm cache: a private server per worker, started
    from the migrated state.

It prints the median time per worker from its first fixture to a ready test database
(pytest-django's ``django_db_setup`` and all it depends on: for (c), what is left of
starting the worker's server, which on PostgreSQL starts while the worker collects its
tests) and the median wall time of the whole run, which counts everything.
With ``--engine postgresql`` the server outside pytest is a PostgreSQL cluster (run as the
``postgres`` account when this runs as root) and (c) is ``services_django_db = postgresql``.
Needs mysqlclient (or psycopg), Django, pytest-django and pytest-xdist in the running
interpreter.
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
import time
from pathlib import Path

from bench_mysql import find, memory_folder

SHOP = Path(__file__).resolve().parent.parent / "tests" / "django_shop"

#: Writes how long this worker took from its first fixture to a ready ``django_db_setup``
#: (what it depends on included: for pytest-services, starting the worker's server).
TIMING_PLUGIN = """
import json, os, time
import pytest

FIRST = []

@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    if not FIRST:
        FIRST.append(time.perf_counter())
    yield
    if fixturedef.argname == "django_db_setup":
        worker = os.environ.get("PYTEST_XDIST_WORKER", "local")
        with open(os.path.join(os.environ["BENCH_OUT"], f"setup-{worker}.json"), "w") as out:
            json.dump(time.perf_counter() - FIRST[0], out)
"""

#: The project's settings with the default database on the server started outside pytest.
OUTSIDE_SETTINGS = """
from shop_site.settings import *  # noqa: F403

DATABASES = {{
    "default": {{
        "ENGINE": "django.db.backends.mysql",
        "NAME": "{name}",
        "USER": "root",
        "HOST": {socket!r},
        "OPTIONS": {{"charset": "utf8mb4"}},
    }}
}}
"""


#: The same for a PostgreSQL server: its socket folder and port.
OUTSIDE_SETTINGS_POSTGRESQL = """
from shop_site.settings import *  # noqa: F403

DATABASES = {{
    "default": {{
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "{name}",
        "USER": "postgres",
        "HOST": {socket!r},
        "PORT": "{port}",
    }}
}}
"""
#: The port of the PostgreSQL server outside pytest (its socket only: no TCP).
POSTGRESQL_PORT = 5499


def start_outside_postgresql() -> tuple[subprocess.Popen[bytes], str, Path]:
    """``initdb`` and ``postgres``, as a CI job's database service would run them."""
    import psycopg

    from pytest_services._db.postgresql.server import find_bindir

    bin_dir = find_bindir()
    folder = Path(tempfile.mkdtemp(prefix="bench-django-pg-", dir=memory_folder()))
    run_as: list[str] = []
    if os.geteuid() == 0:  # the server refuses root: its own account, its own folder
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres", "postgres")
    data = folder / "data"
    subprocess.run(
        [*run_as, f"{bin_dir}/initdb", "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    command = [*run_as, f"{bin_dir}/postgres", "-D", str(data), "-k", str(folder),
               "-p", str(POSTGRESQL_PORT), "-c", "listen_addresses=", "-c", "fsync=off",
               "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    dsn = f"host={folder} port={POSTGRESQL_PORT} user=postgres dbname=postgres"
    while True:
        try:
            psycopg.connect(dsn).close()
            return process, str(folder), folder
        except psycopg.Error:
            if process.poll() is not None:
                sys.exit("postgres exited")
            time.sleep(0.01)


def start_outside_server(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``mariadb-install-db`` and ``mariadbd``, as a CI job's database service would run."""
    import MySQLdb

    data, socket = folder / "data", str(folder / "mysql.sock")
    subprocess.run(
        [find("mariadb-install-db"), "--no-defaults", "--auth-root-authentication-method=normal",
         "--skip-test-db", f"--datadir={data}"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    command = [find("mariadbd"), "--no-defaults", f"--datadir={data}", f"--socket={socket}",
               "--skip-networking", f"--pid-file={folder}/mysql.pid", "--skip-log-bin",
               "--innodb-flush-log-at-trx-commit=0"]  # fmt: skip
    if os.geteuid() == 0:
        command.append("--user=root")
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    while True:
        try:
            MySQLdb.connect(unix_socket=socket, user="root").close()
            return process, socket
        except MySQLdb.Error:
            if process.poll() is not None:
                sys.exit("mariadbd exited")
            time.sleep(0.01)


def run_suite(
    project: Path, out: Path, args: list[str], env: dict[str, str], may_fail: bool = False
) -> dict[str, float]:
    for old in out.glob("setup-*.json"):
        old.unlink()
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "bench_timing",
         "-n", "2", *args],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(out), "BENCH_OUT": str(out), **env},
        capture_output=True,
        text=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    failed = float(result.stdout.count("\nFAILED "))
    if result.returncode not in (0, 1) or (result.returncode and not may_fail):
        sys.exit(f"the shop suite failed ({args}):\n{result.stdout[-3000:]}\n{result.stderr}")
    setups = [json.loads(path.read_text()) for path in out.glob("setup-*.json")]
    return {"wall": wall, "setup": statistics.median(setups), "failed": failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per way (3)")
    parser.add_argument(
        "--engine", choices=("mariadb", "postgresql"), default="mariadb", help="(mariadb)"
    )
    options = parser.parse_args()
    postgresql = options.engine == "postgresql"
    scratch = Path(tempfile.mkdtemp(prefix="bench-django-", dir=memory_folder()))
    project = scratch / "shop"
    shutil.copytree(SHOP, project, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3"))
    (scratch / "bench_timing.py").write_text(TIMING_PLUGIN)
    results: dict[str, list[dict[str, float]]] = {"a": [], "b": [], "c": []}
    pg_folder = None
    if postgresql:
        server, socket, pg_folder = start_outside_postgresql()
        settings = OUTSIDE_SETTINGS_POSTGRESQL
    else:
        server, socket = start_outside_server(scratch)
        settings = OUTSIDE_SETTINGS
    services = ["-o", "run_services=true", "-o", f"services_django_db={options.engine}"]
    env = {"PYTEST_SERVICES_CACHE_DIR": str(scratch / "cache")}
    try:
        # (a) and (b) on databases of their own: (a)'s end drops its test databases.
        for name in ("a", "b"):
            text = settings.format(socket=socket, port=POSTGRESQL_PORT, name=f"shop_{name}")
            (project / f"bench_settings_{name}.py").write_text(text)
        outside_a, outside = ["--ds", "bench_settings_a"], ["--ds", "bench_settings_b"]
        print("warming up: (b)'s kept databases, (c)'s migrated state ...", file=sys.stderr)
        run_suite(project, scratch, [*outside, "--reuse-db", "--create-db"], {})
        run_suite(project, scratch, services, env)
        # The three ways take turns, so that a change in the machine's load hits all three.
        for number in range(options.runs):
            print(f"round {number + 1} of {options.runs}: (a), (b), (c) ...", file=sys.stderr)
            results["a"].append(run_suite(project, scratch, [*outside_a, "--create-db"], {}))
            # Kept databases lose the data migrations' rows to the transactional tests of the
            # run before, so the tests that check those rows fail.
            results["b"].append(
                run_suite(project, scratch, [*outside, "--reuse-db"], {}, may_fail=True)
            )
            results["c"].append(run_suite(project, scratch, services, env))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()
        if pg_folder is not None:
            shutil.rmtree(pg_folder, ignore_errors=True)
    shutil.rmtree(scratch, ignore_errors=True)

    def median(way: str, key: str) -> float:
        return statistics.median(run[key] for run in results[way])

    labels = {
        "a": "(a) server outside pytest, migrations per worker",
        "b": "(b) the same, --reuse-db (second run)",
        "c": "(c) pytest-services, warm cache",
    }
    print(f"\nshop suite on {options.engine}, pytest -n 2, median of {options.runs} runs\n")
    print(f"{'':52} {'setup per worker':>17} {'wall':>9} {'setup vs (a)':>13} {'failed':>7}")
    for way, label in labels.items():
        setup, wall = median(way, "setup"), median(way, "wall")
        ratio = setup / median("a", "setup")
        failed = int(median(way, "failed"))
        print(f"{label:52} {setup * 1000:>14.0f} ms {wall:>7.2f} s {ratio:>12.2f}x {failed:>7}")


if __name__ == "__main__":
    main()
