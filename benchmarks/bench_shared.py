"""What ``shared_service`` saves: one heavy service for a ``-n 4`` run instead of one per worker.

    python benchmarks/bench_shared.py [--workers N] [--tests N] [--rounds N]
                                      [--start-seconds S] [--megabytes MB]

The service is a small Python server that needs ``--start-seconds`` (2) to start and holds
``--megabytes`` (200) of memory, then answers on a TCP port.  The same test suite (``--tests``
tests, each talking to the service) runs under ``pytest -n 4`` in two ways:

* ``per worker``: a session fixture on ``watcher_getter`` and ``port_getter``, so every
  worker starts its own copy, as before ``shared_service`` existed;
* ``shared``: the fixture calls ``shared_service("heavy", start)``, so the run starts one.

Each round runs both, in alternating order.  The table gives medians of the wall time of the
whole ``pytest`` command and of the peak memory: the proportional set size (PSS, shared
pages divided among their users) of every process of the run -- controller, workers and
services -- summed, sampled every 20 ms; and of the services alone.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import _common

#: The service: waits, fills memory that stays resident, then answers every connection.
SERVICE = """
    import socket, sys, time

    port, seconds, megabytes = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    time.sleep(seconds)
    ballast = b"\\x01" * (megabytes * 1024 * 1024)
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
    import os, sys

    import pytest

    from pytest_services import checkers

    SERVICE = os.path.join(os.path.dirname(__file__), "heavy_service.py")
    ARGS = [os.environ["BENCH_SECONDS"], os.environ["BENCH_MEGABYTES"]]


    def start(watcher_getter, port_getter):
        port = port_getter()
        watcher_getter(sys.executable, [SERVICE, str(port), *ARGS], checker=checkers.tcp(port),
                       timeout=120)
        return {"port": port}


    if os.environ["BENCH_MODE"] == "shared":

        @pytest.fixture(scope="session")
        def heavy(shared_service):
            return shared_service("heavy", start, timeout=120)

    else:

        @pytest.fixture(scope="session")
        def heavy(watcher_getter, port_getter, request):
            port = port_getter()
            watcher_getter(sys.executable, [SERVICE, str(port), *ARGS],
                           checker=checkers.tcp(port), timeout=120, request=request)
            return {"port": port}
"""

TESTS = """
    import socket

    import pytest


    @pytest.mark.parametrize("n", range({tests}))
    def test_talks_to_the_service(heavy, n):
        with socket.create_connection(("127.0.0.1", heavy["port"]), timeout=10) as conn:
            assert conn.recv(2) == b"ok"
"""

MODES = ("per worker", "shared")


class MemorySampler:
    """Sums the PSS of every process carrying ``tag`` in its environment, every 20 ms."""

    def __init__(self, tag: str) -> None:
        self._tag = f"BENCH_RUN={tag}".encode()
        self._ours: dict[int, bool] = {}
        self.peak_total = 0
        self.peak_services = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = services = 0
            for pid in self._pids():
                kilobytes = _pss_kb(pid)
                total += kilobytes
                if _is_service(pid):
                    services += kilobytes
            self.peak_total = max(self.peak_total, total)
            self.peak_services = max(self.peak_services, services)
            self._stop.wait(0.02)

    def _pids(self) -> list[int]:
        pids = [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
        for pid in pids:
            if pid not in self._ours:
                try:
                    with open(f"/proc/{pid}/environ", "rb") as environ:
                        self._ours[pid] = self._tag in environ.read().split(b"\0")
                except OSError:
                    self._ours[pid] = False
        return [pid for pid in pids if self._ours[pid]]


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _is_service(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"heavy_service.py" in cmdline.read()
    except OSError:
        return False


def run(folder: Path, mode: str, args: argparse.Namespace) -> tuple[float, int, int]:
    """Run the suite once; return wall seconds and peak kB (all processes, services)."""
    tag = uuid.uuid4().hex
    env = _common.inner_env(
        {
            "BENCH_MODE": "shared" if mode == "shared" else "per-worker",
            "BENCH_SECONDS": str(args.start_seconds),
            "BENCH_MEGABYTES": str(args.megabytes),
            "BENCH_RUN": tag,
        }
    )
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-n",
        str(args.workers),
        "-c",
        os.fspath(folder / "pytest.ini"),
        "--rootdir",
        os.fspath(folder),
        os.fspath(folder),
    ]
    with MemorySampler(tag) as sampler:
        started = time.perf_counter()
        result = subprocess.run(command, env=env, cwd=folder, capture_output=True, text=True)
        wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"the {mode} run failed:\n{result.stdout}\n{result.stderr}")
    return wall, sampler.peak_total, sampler.peak_services


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4, help="pytest -n (default 4)")
    parser.add_argument("--tests", type=int, default=40, help="tests in the suite (default 40)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each way (default 3)")
    parser.add_argument("--start-seconds", type=float, default=2.0, help="service start time")
    parser.add_argument("--megabytes", type=int, default=200, help="service memory (MB)")
    args = parser.parse_args()
    _common.check_new_python()

    folder = _common.new_scratch_dir("bench-shared-")
    try:
        _common.write_files(
            folder,
            {
                "pytest.ini": _common.INNER_INI,
                "heavy_service.py": SERVICE,
                "conftest.py": CONFTEST,
                "test_heavy.py": TESTS.format(tests=args.tests),
            },
        )
        results: dict[str, list[tuple[float, int, int]]] = {mode: [] for mode in MODES}
        for round_number in range(args.rounds):
            order = MODES if round_number % 2 == 0 else MODES[::-1]
            for mode in order:
                _common.log(f"round {round_number + 1}/{args.rounds}: {mode}")
                results[mode].append(run(folder, mode, args))
    finally:
        _common.remove_dir(folder)

    def medians(mode: str) -> tuple[float, float, float]:
        rows = results[mode]
        wall, total, services = (_common.median(row[i] for row in rows) for i in range(3))
        return wall, total, services

    base = medians("per worker")
    print(
        f"pytest -n {args.workers}, {args.tests} tests, a service that needs "
        f"{args.start_seconds:g} s and {args.megabytes} MB to start; medians of {args.rounds} "
        "rounds"
    )
    rows = []
    for mode in MODES:
        wall, total, services = medians(mode)
        rows.append(
            [
                mode,
                f"{wall:.2f} s",
                _common.ratio(wall, base[0]),
                f"{total / 1024:.0f} MB",
                _common.ratio(total, base[1]),
                f"{services / 1024:.0f} MB",
                _common.ratio(services, base[2]),
            ]
        )
    _common.print_table(
        ["way", "wall time", "ratio", "peak memory", "ratio", "of which services", "ratio"], rows
    )


if __name__ == "__main__":
    main()
