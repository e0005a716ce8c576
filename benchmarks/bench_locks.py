"""Port reservation speed: ``port_getter`` of pytest-services (this project) vs 2.2.2.

Each measurement is a real pytest session whose test calls ``port_getter()`` ``--calls``
times (200 by default) and times the loop.  It is done

* in one session alone, and
* in one session while ``--competitors`` other sessions (4 by default) do the same at the
  same moment: all sessions start their loop together (a file barrier) and keep their ports
  until every session has finished, so that any port handed out twice shows up.

For this project every round checks that no port was handed out twice across the
competing sessions, and prints the check.  The time a session takes to give its ports back
at its end is reported too.  Both implementations run the same inner test, each in its own
fresh lock folder; pytest-services 2.2.2 runs from a separate virtual environment (created
on first use).  The medians over ``--rounds`` rounds are printed, with the ratio old/new.

A lock file costs more on a disk file system than on a tmpfs, so by default everything is
measured twice: with the lock folders in the temporary folder and in ``/dev/shm``
(``--lock-root`` chooses).

Run it with the interpreter where this project is installed::

    python benchmarks/bench_locks.py [--calls N] [--competitors N] [--rounds N]
                                     [--lock-root DIR] [--old-venv PATH] [--skip-old]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import _common

#: The inner test, identical for both implementations.  All sessions of a round wait for
#: each other before the timed loop ("ready" barrier) and after it ("done" barrier), so that
#: they compete for the lock folder at the same time and hold their ports together.
INNER_TEST = """
    from __future__ import annotations

    import json
    import os
    import time

    import pytest

    CALLS = int(os.environ["BENCH_CALLS"])
    SESSIONS = int(os.environ["BENCH_SESSIONS"])
    SESSION = os.environ["BENCH_SESSION"]
    SYNC_DIR = os.environ["BENCH_SYNC_DIR"]
    RESULT = os.environ["BENCH_RESULT"]


    def barrier(stage, pause):
        open(os.path.join(SYNC_DIR, f"{stage}-{SESSION}"), "w").close()
        deadline = time.monotonic() + 300
        while sum(name.startswith(stage + "-") for name in os.listdir(SYNC_DIR)) < SESSIONS:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the other sessions never reached the {stage} barrier")
            time.sleep(pause)


    @pytest.fixture(scope="session")
    def record():
        # Set up before port_getter, so torn down after it: times the release of ports.
        data = {}
        yield data
        data["release"] = time.perf_counter() - data.pop("release_start")
        with open(RESULT, "w") as result:
            json.dump(data, result)


    def test_ports(record, port_getter):
        barrier("ready", 0.001)
        start = time.perf_counter()
        ports = [port_getter() for _ in range(CALLS)]
        record["elapsed"] = time.perf_counter() - start
        record["ports"] = ports
        barrier("done", 0.01)
        record["release_start"] = time.perf_counter()
"""

#: Both implementations log nowhere (see ``_common.SILENT_LOG_CONFTEST``) and lock in a
#: fresh folder of the benchmark's.
INNER_CONFTEST = (
    _common.SILENT_LOG_CONFTEST
    + """
    import os


    @pytest.fixture(scope="session")
    def lock_dir():
        path = os.environ["BENCH_LOCK_DIR"]
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path
"""
)


@dataclass
class Round:
    """What the sessions of one round measured."""

    elapsed: list[float]
    release: list[float]
    ports: list[list[int]]

    def duplicates(self) -> list[int]:
        """Ports that more than one session (or one session twice) got in this round."""
        seen: set[int] = set()
        twice: set[int] = set()
        for port in (port for ports in self.ports for port in ports):
            (twice if port in seen else seen).add(port)
        return sorted(twice)


@dataclass
class Results:
    """All rounds of one implementation."""

    label: str
    alone: list[Round] = field(default_factory=list)
    contended: list[Round] = field(default_factory=list)


def run_round(
    python: str | os.PathLike[str], folder: Path, lock_dir: Path, sessions: int, calls: int
) -> Round:
    """Run ``sessions`` inner pytest sessions at once, in the fresh lock folder ``lock_dir``."""
    sync_dir = folder / "sync"
    _common.remove_dir(sync_dir)
    sync_dir.mkdir()
    processes = []
    for number in range(sessions):
        env = {
            "BENCH_CALLS": str(calls),
            "BENCH_SESSIONS": str(sessions),
            "BENCH_SESSION": str(number),
            "BENCH_SYNC_DIR": os.fspath(sync_dir),
            "BENCH_LOCK_DIR": os.fspath(lock_dir),
            "BENCH_RESULT": os.fspath(folder / f"result-{number}.json"),
        }
        processes.append(
            subprocess.Popen(
                _common.inner_pytest_command(python, folder),
                env=_common.inner_env(env),
                cwd=folder,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    failures = []
    for process in processes:
        output, _ = process.communicate(timeout=600)
        if process.returncode != 0:
            failures.append(output)
    if failures:
        raise SystemExit(f"an inner pytest session with {python} failed:\n{failures[0]}")
    data = [json.loads((folder / f"result-{n}.json").read_text()) for n in range(sessions)]
    return Round(
        [item["elapsed"] for item in data],
        [item["release"] for item in data],
        [item["ports"] for item in data],
    )


@dataclass
class Implementation:
    """One pytest-services to measure: its interpreter, its scratch folder, its results."""

    label: str
    python: str | os.PathLike[str]
    folder: Path
    check_duplicates: bool
    results: Results = field(init=False)

    def __post_init__(self) -> None:
        self.results = Results(self.label)
        _common.write_files(
            self.folder,
            {
                "pytest.ini": _common.INNER_INI,
                "conftest.py": INNER_CONFTEST,
                "test_locks.py": INNER_TEST,
            },
        )


def fresh_lock_dir(lock_root: Path) -> Path:
    """A new, empty, private lock folder in ``lock_root``."""
    path = Path(tempfile.mkdtemp(prefix="bench-locks-", dir=lock_root))
    path.chmod(0o700)
    return path


def bench(
    implementations: list[Implementation],
    lock_root: Path,
    calls: int,
    competitors: int,
    rounds: int,
) -> None:
    """Measure every implementation, round after round, each round in fresh lock folders."""
    for number in range(rounds):
        for impl in implementations:
            started = time.perf_counter()
            cases = ((1, impl.results.alone), (1 + competitors, impl.results.contended))
            for sessions, runs in cases:
                lock_dir = fresh_lock_dir(lock_root)
                try:
                    runs.append(run_round(impl.python, impl.folder, lock_dir, sessions, calls))
                finally:
                    _common.remove_dir(lock_dir)
            contended = impl.results.contended[-1]
            total = sum(len(ports) for ports in contended.ports)
            twice = contended.duplicates()
            message = f"  round {number + 1}, {impl.label}: {time.perf_counter() - started:.1f} s"
            if impl.check_duplicates or twice:
                verdict = "OK, no duplicates" if not twice else f"DUPLICATES: {twice[:20]}"
                message += (
                    f"; {1 + competitors} sessions at once got {total} ports, "
                    f"{total - len(twice)} distinct: {verdict}"
                )
            _common.log(message)


def summary(results: Results) -> dict[str, float]:
    """Medians over the rounds of the figures printed in the table."""
    return {
        "alone": _common.median(r.elapsed[0] for r in results.alone),
        "contended median": _common.median(_common.median(r.elapsed) for r in results.contended),
        "contended slowest": _common.median(max(r.elapsed) for r in results.contended),
        "alone release": _common.median(r.release[0] for r in results.alone),
        "contended release": _common.median(_common.median(r.release) for r in results.contended),
    }


def print_results(new: Results, old: Results | None, calls: int, competitors: int) -> None:
    sessions = 1 + competitors
    labels = {
        "alone": f"{calls} calls, 1 session alone",
        "contended median": f"{calls} calls each, {sessions} sessions at once: median session",
        "contended slowest": f"{calls} calls each, {sessions} sessions at once: slowest session",
        "alone release": f"release of {calls} ports at session end, alone",
        "contended release": f"release of {calls} ports at session end, {sessions} at once",
    }
    new_summary = summary(new)
    old_summary = summary(old) if old is not None else None
    rows = []
    for key, text in labels.items():
        old_value = old_summary[key] if old_summary is not None else float("nan")
        rows.append(
            [
                text,
                _common.ms(old_value),
                _common.ms(new_summary[key]),
                _common.ratio(old_value, new_summary[key]),
            ]
        )
    old_label = old.label if old is not None else f"pytest-services {_common.OLD_VERSION}"
    _common.print_table(["port_getter()", old_label, new.label, "old / new"], rows)
    rounds = len(new.contended)
    for results in (new, old):
        if results is None:
            continue
        clean = all(not r.duplicates() for r in results.contended)
        print(
            f"duplicate check, {results.label}: {rounds} rounds of {sessions} sessions x "
            f"{calls} ports: {'no port was handed out twice' if clean else 'DUPLICATE PORTS'}"
        )


def default_lock_roots() -> list[str]:
    """The temporary folder (where this project locks by default) and ``/dev/shm``."""
    roots = [tempfile.gettempdir()]
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        roots.append("/dev/shm")
    return roots


def filesystem(path: str) -> str:
    """The type of the file system holding ``path`` (from ``/proc/mounts``), or ``?``."""
    best, kind = "", "?"
    real = os.path.realpath(path)
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1]
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and len(point) > len(best):
                    best, kind = point, fields[2]
    except OSError:
        pass
    return kind


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time port_getter() calls in a pytest session, alone and while other "
        f"sessions do the same, for this project and pytest-services {_common.OLD_VERSION}.",
    )
    parser.add_argument(
        "--calls", type=int, default=200, help="port_getter() calls per session (200)"
    )
    parser.add_argument(
        "--competitors",
        type=int,
        default=4,
        help="sessions competing with the measured one in the contended case (4)",
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds per implementation; medians printed (5)"
    )
    parser.add_argument(
        "--lock-root",
        action="append",
        metavar="DIR",
        help="folder in which the fresh lock folders are made; repeat to compare file "
        "systems (default: the temporary folder, and /dev/shm when present)",
    )
    _common.add_old_version_options(parser)
    args = parser.parse_args(argv)
    for name in ("calls", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.competitors < 0:
        parser.error("--competitors must not be negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    version = _common.check_new_python()
    lock_roots = args.lock_root or default_lock_roots()
    scratch = _common.new_scratch_dir("bench-locks-")
    other = _common.other_implementation(args, scratch)
    tables: list[tuple[str, Implementation, Implementation | None]] = []
    try:
        for index, lock_root in enumerate(lock_roots):
            where = f"{lock_root} ({filesystem(lock_root)})"
            new = Implementation(
                f"this project {version}", sys.executable, scratch / f"new-{index}", True
            )
            old = None
            if other is not None:
                old = Implementation(other[0], other[1], scratch / f"old-{index}", True)
            _common.log(f"lock folders in {where}: {args.rounds} rounds")
            implementations = [new] if old is None else [new, old]
            bench(implementations, Path(lock_root), args.calls, args.competitors, args.rounds)
            tables.append((where, new, old))
    finally:
        _common.remove_dir(scratch)
    for where, new, old in tables:
        print(
            f"\nport_getter() in pytest sessions, lock folders in {where}, "
            f"median of {args.rounds} rounds\n"
        )
        print_results(new.results, old.results if old else None, args.calls, args.competitors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
