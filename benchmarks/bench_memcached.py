"""How long the ``memcached`` fixture takes to start and stop memcached, against doing it by hand.

Usage: ``python benchmarks/bench_memcached.py [--rounds N]``

Each round starts memcached twice on a fresh unix socket:

* through the engine, exactly as the ``memcached`` fixture does (same binary, arguments,
  readiness check and ``grace=0``), then stops it with ``ServiceProcess.stop``;
* by hand: ``subprocess.Popen`` and a 1 ms loop on the same ``version`` check, then
  ``kill()`` and ``wait()``.

It prints the median of each time over the rounds and how the fixture compares.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _common

from pytest_services.folders import memory_root
from pytest_services.memcached import (
    find_memcached,
    memcached_arguments,
    memcached_checker,
    memcached_socket_path,
)
from pytest_services.process import start_service

#: Targets: ready within READY_FACTOR x bare + READY_SLACK s; teardown under TEARDOWN_LIMIT s.
READY_FACTOR = 1.5
READY_SLACK = 0.010
TEARDOWN_LIMIT = 0.1
#: Give up on a bare start after this many seconds.
TIMEOUT = 20.0

Timing = tuple[float, float]


def fixture_round(binary: str, run_dir: str) -> Timing:
    """Start and stop memcached the way the fixture does; return (ready, teardown) seconds."""
    socket = memcached_socket_path(run_dir)
    started = time.perf_counter()
    process = start_service(
        binary,
        memcached_arguments(socket),
        checker=memcached_checker(socket),
        log_dir=Path(run_dir, "logs"),
        grace=0,
    )
    ready = time.perf_counter()
    process.stop()
    stopped = time.perf_counter()
    return ready - started, stopped - ready


def bare_round(binary: str, run_dir: str) -> Timing:
    """Start memcached with Popen, poll every 1 ms, kill it; return (ready, teardown) seconds."""
    socket = memcached_socket_path(run_dir)
    checker = memcached_checker(socket)
    started = time.perf_counter()
    process = subprocess.Popen(
        [binary, *memcached_arguments(socket)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not checker():
            if process.poll() is not None:
                raise SystemExit(f"memcached exited with code {process.returncode}")
            if time.perf_counter() - started > TIMEOUT:
                raise SystemExit(f"memcached was not ready after {TIMEOUT:g} s")
            time.sleep(0.001)
        ready = time.perf_counter()
    finally:
        process.kill()
        process.wait()
    stopped = time.perf_counter()
    return ready - started, stopped - ready


def _in_fresh_dir(run: Callable[[str, str], Timing], binary: str, parent: str) -> Timing:
    run_dir = tempfile.mkdtemp(prefix="bench-memcached-", dir=parent)
    try:
        return run(binary, run_dir)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="rounds to run (default 20)")
    rounds = parser.parse_args().rounds
    if rounds < 1:
        parser.error("--rounds must be at least 1")

    binary = find_memcached()
    parent = memory_root(tempfile.gettempdir())
    fixture: list[Timing] = []
    bare: list[Timing] = []
    for number in range(rounds):
        # Alternate the order so that neither side always runs on a warmer system.
        pair = [(fixture_round, fixture), (bare_round, bare)]
        for run, results in pair if number % 2 == 0 else reversed(pair):
            results.append(_in_fresh_dir(run, binary, parent))

    fixture_ready, fixture_stop = (_common.median(values) for values in zip(*fixture))
    bare_ready, bare_stop = (_common.median(values) for values in zip(*bare))
    ready_limit = READY_FACTOR * bare_ready + READY_SLACK
    ready_target = (
        f"<= {_common.ms(ready_limit)} ({READY_FACTOR:g}x bare + {_common.ms(READY_SLACK)})"
    )
    ready_ok = fixture_ready <= ready_limit
    stop_ok = fixture_stop < TEARDOWN_LIMIT

    print(f"memcached {binary}, sockets in {parent}, median of {rounds} rounds")
    _common.print_table(
        ["", "fixture", "bare", "ratio", "target", ""],
        [
            [
                "ready",
                _common.ms(fixture_ready),
                _common.ms(bare_ready),
                _common.ratio(fixture_ready, bare_ready),
                ready_target,
                "ok" if ready_ok else "MISSED",
            ],
            [
                "teardown",
                _common.ms(fixture_stop),
                _common.ms(bare_stop),
                _common.ratio(fixture_stop, bare_stop),
                f"< {_common.ms(TEARDOWN_LIMIT)}",
                "ok" if stop_ok else "MISSED",
            ],
        ],
    )
    return 0 if ready_ok and stop_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
