"""What ``--services-keep`` saves: the second run of the edit-test loop gets a warm service.

    python benchmarks/bench_keep.py [--rounds N] [--start-seconds S]

The service is a small Python server that needs ``--start-seconds`` (2) before it listens on
its TCP port.  Each round, in a keep folder of its own, runs the same one-test suite twice
with ``pytest --run-services --services-keep``: the first run starts the service and leaves
it to its keeper, the second finds it kept and gets it without calling ``start``; then
``pytest --services-stop`` stops it.  Inside each run, the fixture measures how long
``shared_service(...)`` took to hand it a ready service; the wall time of each ``pytest``
command is measured too.  The table gives medians over ``--rounds`` (5) rounds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import _common

SERVICE = """
    import socket, sys, time

    port, seconds = int(sys.argv[1]), float(sys.argv[2])
    time.sleep(seconds)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(64)
    while True:
        conn, _ = server.accept()
        conn.sendall(b"ok")
        conn.close()
"""

CONFTEST = """
    import os, sys, time

    import pytest

    from pytest_services import checkers

    SERVICE = os.path.join(os.path.dirname(__file__), "slow_service.py")


    def start(watcher_getter, port_getter):
        port = port_getter()
        watcher_getter(sys.executable, [SERVICE, str(port), os.environ["BENCH_SECONDS"]],
                       checker=checkers.tcp(port), timeout=120)
        return {"port": port}


    @pytest.fixture(scope="session")
    def slow(shared_service):
        started = time.perf_counter()
        value = shared_service("slow", start, timeout=120)
        with open(os.environ["BENCH_RESULT"], "w") as result:
            result.write(str(time.perf_counter() - started))
        return value
"""

TESTS = """
    import socket


    def test_talks_to_the_service(slow):
        with socket.create_connection(("127.0.0.1", slow["port"]), timeout=10) as conn:
            assert conn.recv(2) == b"ok"
"""

RUNS = ("first run (starts it)", "second run (kept)")


def pytest_command(folder: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-c",
        os.fspath(folder / "pytest.ini"),
        "--rootdir",
        os.fspath(folder),
        *args,
    ]


def run(folder: Path, env: dict[str, str], *args: str) -> float:
    """Run pytest once in ``folder``; return its wall time."""
    started = time.perf_counter()
    result = subprocess.run(
        pytest_command(folder, *args), env=env, cwd=folder, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"pytest {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--start-seconds", type=float, default=2.0, help="service start time")
    args = parser.parse_args()
    _common.check_new_python()

    folder = _common.new_scratch_dir("bench-keep-")
    fixture: dict[str, list[float]] = {name: [] for name in RUNS}
    wall: dict[str, list[float]] = {name: [] for name in RUNS}
    try:
        _common.write_files(
            folder,
            {
                "pytest.ini": _common.INNER_INI,
                "slow_service.py": SERVICE,
                "conftest.py": CONFTEST,
                "test_slow.py": TESTS,
            },
        )
        result = folder / "result"
        for round_number in range(args.rounds):
            env = _common.inner_env(
                {
                    "BENCH_SECONDS": str(args.start_seconds),
                    "BENCH_RESULT": os.fspath(result),
                    "PYTEST_SERVICES_KEEP_DIR": os.fspath(folder / f"kept-{round_number}"),
                }
            )
            env.pop("CI", None)
            try:
                for name in RUNS:
                    _common.log(f"round {round_number + 1}/{args.rounds}: {name}")
                    wall[name].append(
                        run(folder, env, os.fspath(folder), "--run-services", "--services-keep")
                    )
                    fixture[name].append(float(result.read_text()))
            finally:
                run(folder, env, "--services-stop")
    finally:
        _common.remove_dir(folder)

    first = _common.median(fixture[RUNS[0]])
    first_wall = _common.median(wall[RUNS[0]])
    print(
        f"a shared service that needs {args.start_seconds:g} s to become ready, kept with "
        f"--services-keep; medians of {args.rounds} rounds"
    )
    rows = []
    for name in RUNS:
        ready, whole = _common.median(fixture[name]), _common.median(wall[name])
        rows.append(
            [
                name,
                _common.ms(ready),
                _common.ratio(ready, first),
                f"{whole:.2f} s",
                _common.ratio(whole, first_wall),
            ]
        )
    _common.print_table(["run", "fixture ready", "ratio", "pytest wall time", "ratio"], rows)


if __name__ == "__main__":
    main()
