"""Time to readiness of a small server: pytest-services (this project) vs by hand vs 2.2.2.

The server is ``python -m http.server -b 127.0.0.1 PORT``; it is ready when a TCP connection
to its port succeeds.  In one run, and with the same interpreter for the server every time,
it is started:

1. by hand: ``subprocess.Popen`` and the checker polled every millisecond (the floor);
2. with this project's engine, ``start_service``, called directly;
3. with this project's ``watcher_getter`` fixture, in a real inner pytest session;
4. with pytest-services 2.2.2's ``watcher_getter``, in the same inner test, run from a
   separate virtual environment (created on first use).

Each is timed from the call to the moment it returns a ready process, and again for the
teardown (``stop()``, or the fixture's finalizer), and the medians over ``--rounds`` rounds
are printed with the ratio of readiness to the bare start.

Run it with the interpreter where this project is installed::

    python benchmarks/bench_engine.py [--rounds N] [--old-venv PATH] [--skip-old]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import _common

#: The inner test, run by both this project's plugin and 2.2.2: it starts the server through
#: ``watcher_getter`` once per round, and records how long the call and the teardown took.
INNER_TEST = """
    from __future__ import annotations

    import json
    import os
    import socket
    import time

    import pytest

    SERVER_PYTHON = os.environ["BENCH_SERVER_PYTHON"]
    ROUNDS = int(os.environ["BENCH_ROUNDS"])
    RESULT = os.environ["BENCH_RESULT"]
    ROWS = []


    def free_port():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]


    def make_checker(port):
        def checker():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True
            except OSError:
                return False

        return checker


    @pytest.fixture(scope="session", autouse=True)
    def write_result():
        yield
        with open(RESULT, "w") as result:
            json.dump(ROWS, result)


    @pytest.mark.parametrize("round_", range(ROUNDS))
    def test_ready(round_, watcher_getter, request):
        row = {}

        def stopped():  # registered first, so it runs last
            row["stop"] = time.perf_counter() - row.pop("stop_start")
            ROWS.append(row)

        request.addfinalizer(stopped)
        port = free_port()
        arguments = ["-m", "http.server", "-b", "127.0.0.1", str(port)]
        start = time.perf_counter()
        process = watcher_getter(
            SERVER_PYTHON, arguments, checker=make_checker(port), request=request
        )
        row["ready"] = time.perf_counter() - start
        assert process.poll() is None
        # Registered after watcher_getter's own finalizer, so it runs just before it.
        request.addfinalizer(lambda: row.__setitem__("stop_start", time.perf_counter()))
"""

#: Shared by both inner sessions (see ``_common.SILENT_LOG_CONFTEST``).
INNER_CONFTEST = _common.SILENT_LOG_CONFTEST


@dataclass
class Timings:
    """Readiness and teardown durations of one way of starting the server."""

    label: str
    ready: list[float] = field(default_factory=list)
    stop: list[float] = field(default_factory=list)


def free_port() -> int:
    """A port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_checker(port: int) -> Callable[[], bool]:
    """A checker that is true once something accepts TCP connections on ``port``."""

    def checker() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    return checker


def server_arguments(port: int) -> list[str]:
    return ["-m", "http.server", "-b", "127.0.0.1", str(port)]


def bench_bare(rounds: int, server: str, cwd: Path) -> Timings:
    """Popen, then the checker every millisecond; terminate() and wait() to stop."""
    timings = Timings("by hand: Popen + checker every 1 ms")
    for _ in range(rounds):
        port = free_port()
        checker = make_checker(port)
        start = time.perf_counter()
        process = subprocess.Popen(
            [server, *server_arguments(port)],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while not checker():
            if process.poll() is not None:
                raise SystemExit(f"the server exited with code {process.returncode}")
            time.sleep(0.001)
        timings.ready.append(time.perf_counter() - start)
        start = time.perf_counter()
        process.terminate()
        process.wait()
        timings.stop.append(time.perf_counter() - start)
    return timings


def bench_start_service(rounds: int, server: str, cwd: Path) -> Timings:
    """This project's engine called directly: ``start_service`` and ``stop()``."""
    from pytest_services.process import start_service

    timings = Timings("this project: start_service (in-process)")
    for _ in range(rounds):
        port = free_port()
        start = time.perf_counter()
        process = start_service(
            server,
            server_arguments(port),
            {"cwd": cwd},
            timeout=20,
            checker=make_checker(port),
            log_dir=cwd / "logs",
        )
        timings.ready.append(time.perf_counter() - start)
        start = time.perf_counter()
        process.stop()
        timings.stop.append(time.perf_counter() - start)
    return timings


def bench_watcher_getter(
    label: str, python: str | os.PathLike[str], rounds: int, server: str, folder: Path
) -> Timings:
    """``watcher_getter`` in an inner pytest session run by ``python`` in ``folder``."""
    _common.write_files(
        folder,
        {
            "pytest.ini": _common.INNER_INI,
            "conftest.py": INNER_CONFTEST,
            "test_engine.py": INNER_TEST,
        },
    )
    result = folder / "result.json"
    env = {
        "BENCH_SERVER_PYTHON": server,
        "BENCH_ROUNDS": str(rounds),
        "BENCH_RESULT": os.fspath(result),
    }
    _common.run_inner_pytest(python, folder, env, timeout=60 + 30 * rounds)
    rows = json.loads(result.read_text())
    return Timings(label, [row["ready"] for row in rows], [row["stop"] for row in rows])


def print_results(results: list[Timings], bare: Timings) -> None:
    base = _common.median(bare.ready)
    rows = [
        [
            timings.label,
            _common.ms(_common.median(timings.ready)),
            _common.ms(min(timings.ready)),
            _common.ms(max(timings.ready)),
            _common.ms(_common.median(timings.stop)),
            _common.ratio(_common.median(timings.ready), base),
        ]
        for timings in results
    ]
    headers = ["started", "ready median", "min", "max", "teardown median", "ready / bare"]
    _common.print_table(headers, rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time to readiness (and teardown) of 'python -m http.server' started by "
        "hand, by this project's engine and watcher_getter, and by pytest-services "
        f"{_common.OLD_VERSION}'s watcher_getter.",
    )
    parser.add_argument(
        "--rounds", type=int, default=10, help="starts per method; medians are printed (10)"
    )
    _common.add_old_version_options(parser)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    version = _common.check_new_python()
    server = sys.executable
    scratch = _common.new_scratch_dir("bench-engine-")
    other = _common.other_implementation(args, scratch)
    try:
        # One start nobody measures, so that the first measured one does not pay for cold
        # caches.
        bench_bare(1, server, scratch)
        _common.log(f"by hand, {args.rounds} rounds")
        bare = bench_bare(args.rounds, server, scratch)
        _common.log(f"start_service, {args.rounds} rounds")
        results = [bare, bench_start_service(args.rounds, server, scratch)]
        _common.log(f"watcher_getter of this project ({version}), {args.rounds} rounds")
        results.append(
            bench_watcher_getter(
                f"this project {version}: watcher_getter (pytest)",
                sys.executable,
                args.rounds,
                server,
                scratch / "new",
            )
        )
        if other is not None:
            _common.log(f"watcher_getter of {other[0]}, {args.rounds} rounds")
            results.append(
                bench_watcher_getter(
                    f"{other[0]}: watcher_getter (pytest)",
                    other[1],
                    args.rounds,
                    server,
                    scratch / "old",
                )
            )
    finally:
        _common.remove_dir(scratch)
    print(
        f"\nReadiness of 'python -m http.server' ({args.rounds} rounds each, TCP-connect checker)\n"
    )
    print_results(results, bare)
    return 0


if __name__ == "__main__":
    sys.exit(main())
