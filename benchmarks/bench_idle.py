"""What tests that use no service pay for the plugin being installed.

Usage: ``python benchmarks/bench_idle.py [--tests N] [--rounds N] [--baseline CHECKOUT]``

An inner suite of ``--tests`` (20,000) trivial tests (``def test_x(i): assert i >= 0``,
parametrized) runs in fresh pytest sessions, ``--rounds`` (5) times each way, the ways in
turn in every round (their order rotating from round to round):

* ``-p no:pytest-services``: without the plugin, the floor;
* this tree: with the plugin installed, as a suite that uses services for a few tests has it;
* with ``--baseline CHECKOUT``: the plugin of another checkout (an earlier commit).

Each session is timed in wall time and in CPU time (user + system of the pytest process
and its children).  The table shows the medians and, for each way, the median over the
rounds of its ratio to the run without the plugin in the same round (pairwise).  The
target is at most 1.02x, in CPU and in wall time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import _common

TARGET = 1.02

TEST_FILE = """
    import pytest


    @pytest.mark.parametrize("i", range({tests}))
    def test_x(i):
        assert i >= 0
"""


def run_session(python: str, folder: Path, extra: list[str]) -> tuple[float, float]:
    """Run the suite once; return (wall, cpu) seconds."""
    command = [*_common.inner_pytest_command(python, folder), *extra]
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=folder,
        env=_common.inner_env({}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.stderr is not None
    err = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    if process.returncode != 0:
        raise SystemExit(f"inner session failed ({process.returncode}): {command}\n{err}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=20000, help="tests (default 20000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument(
        "--baseline", metavar="CHECKOUT", help="also measure the plugin of another checkout"
    )
    args = parser.parse_args()
    version = _common.check_new_python()
    scratch = _common.new_scratch_dir("bench-idle-")
    try:
        folder = scratch / "suite"
        _common.write_files(
            folder,
            {"pytest.ini": _common.INNER_INI, "test_idle.py": TEST_FILE.format(tests=args.tests)},
        )
        ways: list[tuple[str, str, list[str]]] = [
            (
                "without the plugin (-p no:pytest-services)",
                sys.executable,
                ["-p", "no:pytest-services"],
            ),
            (f"this tree {version}", sys.executable, []),
        ]
        if args.baseline:
            other = _common.other_implementation(args, scratch)
            assert other is not None
            ways.append((other[0], os.fspath(other[1]), []))
        results: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in ways}
        for number in range(args.rounds):
            shift = number % len(ways)
            for label, python, extra in ways[shift:] + ways[:shift]:
                _common.log(f"round {number + 1}/{args.rounds}: {label}")
                results[label].append(run_session(python, folder, extra))
        floor = results[ways[0][0]]
        rows = []
        for label, _, _ in ways:
            walls = [wall for wall, _ in results[label]]
            cpus = [cpu for _, cpu in results[label]]
            wall_ratio = _common.median(w / f[0] for (w, _), f in zip(results[label], floor))
            cpu_ratio = _common.median(c / f[1] for (_, c), f in zip(results[label], floor))
            per_test = (_common.median(cpus) - _common.median(c for _, c in floor)) / args.tests
            rows.append(
                [
                    label,
                    f"{_common.median(walls):.2f} s",
                    f"{_common.median(cpus):.2f} s",
                    f"{wall_ratio:.3f}x",
                    f"{cpu_ratio:.3f}x",
                    f"{per_test * 1e6:+.1f} µs",
                    "ok" if max(wall_ratio, cpu_ratio) <= TARGET else f"> {TARGET}x",
                ]
            )
        print(f"{args.tests} trivial tests, no service used, {args.rounds} sessions each way")
        _common.print_table(
            ["session", "wall", "CPU", "wall ratio", "CPU ratio", "CPU per test", "target"],
            rows,
        )
    finally:
        _common.remove_dir(scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
