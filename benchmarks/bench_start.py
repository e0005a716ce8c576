"""What the plugin adds to a memcached start, over starting the binary by hand.

Usage: ``python benchmarks/bench_start.py [--rounds N] [--baseline CHECKOUT]...``

memcached starts in about 5 ms, so the plugin's own work shows.  One long-lived process
per way starts memcached on a fresh unix socket when told to, and the driver tells them in
turn, ``--rounds`` (40) times, so that every way sees the same load:

``bare``
    ``subprocess.Popen`` of the binary with the fixture's arguments, then its readiness
    check (``version`` answered) every 0.2 ms, then ``kill()``: the floor.
``this tree``
    ``start_service`` exactly as the ``memcached`` fixture calls it (log file, readiness
    check, watchdog told of the program's tag before it starts and of its group after;
    ``grace=0``), then ``stop()``.
``--baseline CHECKOUT`` (repeatable)
    ``start_service`` of another checkout (e.g. 3.0: ``git worktree add /tmp/v30 4d10490``).

Every process starts one memcached first, untimed, so that its watchdog is running (the
first start of a session pays for it once).  The table shows the median time to ready and
what each way adds to the bare start: the difference of the medians, and the median of the
differences to the bare start of the same round (steadier when the machine's load changes;
the target is read from it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import _common

from pytest_services.folders import memory_root

#: What the plugin may add to a memcached start, in seconds.
TARGET = 0.001

WORKER = r"""
import json, os, shutil, subprocess, sys, tempfile, time

from pytest_services.memcached import (
    find_memcached, memcached_arguments, memcached_checker, memcached_socket_path,
)
from pytest_services.process import start_service

mode, parent = sys.argv[1], sys.argv[2]
binary = find_memcached()


def once():
    folder = tempfile.mkdtemp(prefix="bench-start-", dir=parent)
    socket = memcached_socket_path(folder)
    try:
        if mode == "bare":
            checker = memcached_checker(socket)
            started = time.perf_counter()
            process = subprocess.Popen(
                [binary, *memcached_arguments(socket)], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            while not checker():
                if process.poll() is not None:
                    raise SystemExit(f"memcached exited with {process.returncode}")
                time.sleep(0.0002)
            ready = time.perf_counter() - started
            process.kill()
            process.wait()
        else:
            started = time.perf_counter()
            process = start_service(
                binary, memcached_arguments(socket), checker=memcached_checker(socket),
                log_dir=os.path.join(folder, "logs"), grace=0,
            )
            ready = time.perf_counter() - started
            process.stop()
        return ready
    finally:
        shutil.rmtree(folder, ignore_errors=True)


once()
print("ready", flush=True)
for line in sys.stdin:
    print(json.dumps(once()), flush=True)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="starts each way (default 40)")
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="CHECKOUT",
        help="also measure another checkout of this project (repeatable)",
    )
    args = parser.parse_args()
    version = _common.check_new_python()
    parent = tempfile.mkdtemp(prefix="bench-start-", dir=memory_root(tempfile.gettempdir()))
    here = os.pathsep.join(sys.path[1:])
    ways: list[tuple[str, str, dict[str, str]]] = [
        ("bare: Popen + check every 0.2 ms", "bare", {}),
        (f"this tree {version}: start_service", "plugin", {}),
    ]
    for checkout in args.baseline:
        path = Path(checkout).resolve()
        if not (path / "pytest_services" / "process.py").is_file():
            raise SystemExit(f"--baseline {path} is not a checkout of this project")
        ways.append((f"baseline {path.name}: start_service", "plugin", {"PYTHONPATH": str(path)}))
    workers = []
    try:
        for _, mode, env in ways:
            environment = _common.inner_env(env or {"PYTHONPATH": here})
            worker = subprocess.Popen(
                [sys.executable, "-c", WORKER, mode, parent],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=environment,
            )
            workers.append(worker)
        for worker in workers:
            assert worker.stdout is not None
            if worker.stdout.readline().strip() != "ready":
                raise SystemExit("a worker failed to start memcached")
        times: list[list[float]] = [[] for _ in ways]
        for number in range(args.rounds):
            order = list(range(len(ways)))
            shift = number % len(order)
            for index in order[shift:] + order[:shift]:
                worker = workers[index]
                assert worker.stdin is not None and worker.stdout is not None
                worker.stdin.write("go\n")
                worker.stdin.flush()
                times[index].append(json.loads(worker.stdout.readline()))
    finally:
        for worker in workers:
            if worker.stdin is not None:
                worker.stdin.close()
            worker.wait()
        _common.remove_dir(Path(parent))
    bare = _common.median(times[0])
    rows = []
    for (label, mode, _), values in zip(ways, times):
        added = _common.median(values) - bare
        # The same round's bare start is the fairest floor on a machine whose load changes.
        paired = _common.median([value - floor for value, floor in zip(values, times[0])])
        rows.append(
            [
                label,
                _common.ms(_common.median(values)),
                _common.ms(min(values)),
                "-" if mode == "bare" else f"{added * 1e3:+.2f} ms",
                "-" if mode == "bare" else f"{paired * 1e3:+.2f} ms",
                "" if mode == "bare" else ("ok" if paired <= TARGET else "> 1 ms"),
            ]
        )
    print(f"memcached start to ready, median of {args.rounds} starts each way, in turn")
    _common.print_table(
        ["started", "ready median", "min", "added to bare", "paired", "target"], rows
    )
    print("paired: the median of each start's difference to the bare start of its round")
    return 0


if __name__ == "__main__":
    sys.exit(main())
