"""How fast the ``redis`` fixture gives a test a server, and ``redis_clean`` empties it,
against doing it by hand and against pytest-redis.

Usage: ``python benchmarks/bench_redis.py [--rounds N] [--flushes N]
[--pytest-redis-venv DIR] [--no-pytest-redis]``

Time to ready, over ``--rounds`` rounds each, in alternating order:

* ``bare``: ``subprocess.Popen`` of redis-server on a fresh unix socket, a ``PING`` every
  millisecond until it answers ``PONG``, then ``kill()``;
* ``engine``: what the ``redis`` fixture hands to the engine (same binary, options,
  readiness check that proves the pid, ``grace=0``), by ``start_service`` directly;
* ``fixture``: ``request.getfixturevalue("redis")`` timed in a fresh pytest session, so
  with the session's folders and the watchdog it needs;
* ``pytest-redis``: ``request.getfixturevalue("redis_proc")`` timed the same way, in a
  virtual environment of its own holding pytest-redis from PyPI.

Cleaning, each a median over ``--rounds`` batches of ``--flushes`` calls on one server:

* ``bare FLUSHALL``: the command written on a connection kept open, its ``+OK`` read back;
* ``redis_clean``: what the fixture calls (``RedisCleaner.flush_all``);
* ``... in pytest``: the setup per test, in a session of ``--flushes`` tests, measured by
  a ``pytest_fixture_setup`` wrapper, of a fixture that writes FLUSHALL on a kept socket
  by hand, of ``redis_clean``, and of a fixture of the same shape that does nothing (what
  pytest itself costs).  Between tests the server sleeps, so a round trip costs more
  there than in a tight loop: each is compared with the bare one measured the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _common

from pytest_services.folders import memory_root
from pytest_services.process import start_service
from pytest_services.redis import RedisCleaner, RedisPing, find_redis_server, redis_arguments

#: Targets: ready within READY_FACTOR x bare and PEER_FACTOR x pytest-redis; a clean within
#: CLEAN_FACTOR x a bare FLUSHALL.
READY_FACTOR = 1.3
PEER_FACTOR = 0.3
CLEAN_FACTOR = 1.5
#: Give up on a bare start after this many seconds.
TIMEOUT = 20.0
DEFAULT_PEER_VENV = os.path.join(tempfile.gettempdir(), "bench-venv-pytest-redis")

PING = b"*1\r\n$4\r\nPING\r\n"
FLUSHALL = b"*1\r\n$8\r\nFLUSHALL\r\n"

#: The inner session: one test that times the fixture named by BENCH_FIXTURE.
READY_TEST = """
    import json
    import os
    import time


    def test_ready(request):
        started = time.perf_counter()
        server = request.getfixturevalue(os.environ["BENCH_FIXTURE"])
        ready = time.perf_counter()
        assert server is not None
        with open(os.environ["BENCH_OUT"], "w") as out:
            json.dump({"ready": ready - started}, out)
"""

#: The inner session for ``redis_clean``: many tests, the fixture's setup timed by a hook.
CLEAN_CONFTEST = """
    import json
    import os
    import socket
    import time

    import pytest

    TIMES = {"redis_clean": [], "empty_fixture": [], "bare_flushall": []}


    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(fixturedef, request):
        started = time.perf_counter()
        yield
        if fixturedef.argname in TIMES:
            TIMES[fixturedef.argname].append(time.perf_counter() - started)


    @pytest.fixture
    def empty_fixture(do_redis_clean, _redis_cleaner):
        # what pytest costs for a fixture of the same shape that does nothing
        return None


    @pytest.fixture(scope="session")
    def bare_connection(redis, redis_socket):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(redis_socket)
            yield conn


    @pytest.fixture
    def bare_flushall(do_redis_clean, bare_connection):
        # FLUSHALL by hand, between the same tests
        bare_connection.sendall(b"*1\\r\\n$8\\r\\nFLUSHALL\\r\\n")
        assert bare_connection.recv(64) == b"+OK\\r\\n"


    def pytest_sessionfinish(session):
        with open(os.environ["BENCH_OUT"], "w") as out:
            json.dump(TIMES, out)
"""
CLEAN_TEST = """
    import pytest


    @pytest.mark.parametrize("number", range({tests}))
    def test_clean(redis, bare_flushall, redis_clean, empty_fixture, number):
        pass
"""


def _ping(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(1.0)
            conn.connect(path)
            conn.sendall(PING)
            return conn.recv(64) == b"+PONG\r\n"
    except OSError:
        return False


def bare_round(binary: str, folder: str) -> float:
    """Popen redis-server, PING every 1 ms until PONG, kill it; return seconds to ready."""
    path = os.path.join(folder, "redis.sock")
    started = time.perf_counter()
    process = subprocess.Popen(
        [binary, *redis_arguments(path, folder)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not _ping(path):
            if process.poll() is not None:
                raise SystemExit(f"redis-server exited with code {process.returncode}")
            if time.perf_counter() - started > TIMEOUT:
                raise SystemExit(f"redis-server was not ready after {TIMEOUT:g} s")
            time.sleep(0.001)
        return time.perf_counter() - started
    finally:
        process.kill()
        process.wait()


def engine_round(binary: str, folder: str) -> float:
    """Start redis-server the way the fixture does; return seconds to ready."""
    path = os.path.join(folder, "redis.sock")
    started = time.perf_counter()
    process = start_service(
        binary,
        redis_arguments(path, folder),
        checker=RedisPing(path),
        log_dir=Path(folder, "logs"),
        grace=0,
    )
    ready = time.perf_counter()
    process.stop()
    return ready - started


def session_round(python: str, fixture: str, folder: str, options: list[str]) -> float:
    """Time ``getfixturevalue(fixture)`` in a fresh pytest session run by ``python``."""
    tests = Path(folder, "tests")
    _common.write_files(tests, {"pytest.ini": _common.INNER_INI, "test_ready.py": READY_TEST})
    out = Path(folder, "ready.json")
    env = {"BENCH_FIXTURE": fixture, "BENCH_OUT": str(out), "TMPDIR": folder}
    command = [*_common.inner_pytest_command(python, tests), *options]
    result = subprocess.run(
        command, env=_common.inner_env(env), cwd=tests, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"inner session of {fixture} failed:\n{result.stdout}\n{result.stderr}")
    ready: float = json.loads(out.read_text())["ready"]
    return ready


def ensure_peer_venv(venv: str) -> tuple[str | None, str]:
    """The interpreter of a venv with pytest-redis (created once), or None and why not."""
    python = _common.venv_python(venv)
    version = _common.installed_version(python, "pytest-redis")
    if version is None:
        _common.log(f"installing pytest-redis into {venv}")
        try:
            if not python.exists():
                subprocess.run([sys.executable, "-m", "venv", venv], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                 "pytest-redis"],
                check=True,
            )  # fmt: skip
        except (OSError, subprocess.CalledProcessError) as exc:
            return None, f"pip install pytest-redis failed: {exc}"
        version = _common.installed_version(python, "pytest-redis")
    if version is None:
        return None, f"{venv} has no pytest-redis after installing it"
    return str(python), f"pytest-redis {version}"


def flush_rounds(binary: str, folder: str, rounds: int, flushes: int) -> tuple[float, float]:
    """Median seconds per FLUSHALL: bare on a kept connection, and through RedisCleaner."""
    path = os.path.join(folder, "redis.sock")
    process = start_service(
        binary,
        redis_arguments(path, folder),
        checker=RedisPing(path),
        log_dir=Path(folder, "logs"),
        grace=0,
    )
    bare: list[float] = []
    cleaner_times: list[float] = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(path)
            cleaner = RedisCleaner(path)

            def by_hand() -> None:
                conn.sendall(FLUSHALL)
                if conn.recv(64) != b"+OK\r\n":
                    raise SystemExit("FLUSHALL did not answer +OK")

            pair: list[tuple[Callable[[], None], list[float]]] = [
                (by_hand, bare),
                (cleaner.flush_all, cleaner_times),
            ]
            for number in range(rounds):
                for call, results in pair if number % 2 == 0 else reversed(pair):
                    started = time.perf_counter()
                    for _ in range(flushes):
                        call()
                    results.append((time.perf_counter() - started) / flushes)
            cleaner.close()
    finally:
        process.stop()
    return _common.median(bare), _common.median(cleaner_times)


def clean_in_pytest(folder: str, tests: int) -> tuple[float, float, float]:
    """Median setup time per test of a bare FLUSHALL fixture, of ``redis_clean`` and of a
    fixture of the same shape that does nothing, in a session of ``tests`` tests."""
    inner = Path(folder, "clean")
    _common.write_files(
        inner,
        {
            "pytest.ini": _common.INNER_INI,
            "conftest.py": CLEAN_CONFTEST,
            "test_clean.py": CLEAN_TEST.format(tests=tests),
        },
    )
    out = Path(folder, "clean.json")
    env = {"BENCH_OUT": str(out), "TMPDIR": folder}
    command = [*_common.inner_pytest_command(sys.executable, inner), "--run-services"]
    result = subprocess.run(
        command, env=_common.inner_env(env), cwd=inner, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"inner redis_clean session failed:\n{result.stdout}\n{result.stderr}")
    times = json.loads(out.read_text())
    return tuple(  # type: ignore[return-value]
        _common.median(times[name]) for name in ("bare_flushall", "redis_clean", "empty_fixture")
    )


def _fresh(parent: str) -> str:
    return tempfile.mkdtemp(prefix="bench-redis-", dir=parent)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="rounds to run (default 15)")
    parser.add_argument(
        "--flushes", type=int, default=1000, help="FLUSHALL calls per batch (default 1000)"
    )
    parser.add_argument(
        "--pytest-redis-venv",
        default=DEFAULT_PEER_VENV,
        metavar="DIR",
        help="virtual environment with pytest-redis, created there if missing "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--no-pytest-redis", action="store_true", help="do not measure pytest-redis"
    )
    args = parser.parse_args()
    if args.rounds < 1 or args.flushes < 1:
        parser.error("--rounds and --flushes must be at least 1")
    _common.check_new_python()

    binary = find_redis_server()
    parent = memory_root(tempfile.gettempdir())
    peer, peer_label = (
        (None, "not asked for")
        if args.no_pytest_redis
        else ensure_peer_venv(args.pytest_redis_venv)
    )
    ways: list[tuple[str, Callable[[str], float]]] = [
        ("bare", lambda folder: bare_round(binary, folder)),
        ("engine", lambda folder: engine_round(binary, folder)),
        ("fixture", lambda folder: session_round(sys.executable, "redis", folder,
                                                 ["--run-services"])),
    ]  # fmt: skip
    if peer is not None:
        ways.append(("pytest-redis", lambda folder: session_round(peer, "redis_proc", folder, [])))
    ready: dict[str, list[float]] = {name: [] for name, _ in ways}
    for number in range(args.rounds):
        _common.log(f"round {number + 1}/{args.rounds}")
        for name, run in ways if number % 2 == 0 else list(reversed(ways)):
            folder = _fresh(parent)
            try:
                ready[name].append(run(folder))
            finally:
                shutil.rmtree(folder, ignore_errors=True)
    folder = _fresh(parent)
    try:
        _common.log("FLUSHALL")
        bare_flush, cleaner_flush = flush_rounds(binary, folder, args.rounds, args.flushes)
        bare_in_pytest, fixture_flush, empty_fixture = clean_in_pytest(folder, args.flushes)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    medians = {name: _common.median(values) for name, values in ready.items()}
    bare = medians["bare"]
    peer_median = medians.get("pytest-redis", float("nan"))
    results: list[bool] = []

    def verdict(ok: bool) -> str:
        results.append(ok)
        return "ok" if ok else "MISSED"

    print(f"{binary}, sockets in {parent}, median of {args.rounds} rounds; {peer_label}")
    rows = []
    for name in ready:
        value = medians[name]
        target, mark = "", ""
        if name == "engine":
            target = f"<= {READY_FACTOR:g}x bare"
            mark = verdict(value <= READY_FACTOR * bare)
        elif name == "fixture" and peer is not None:
            target = f"<= {PEER_FACTOR:g}x pytest-redis"
            mark = verdict(value <= PEER_FACTOR * peer_median)
        rows.append(
            [
                f"ready: {name}",
                _common.ms(value),
                f"{_common.ms(min(ready[name]))}-{_common.ms(max(ready[name]))}",
                _common.ratio(value, bare),
                _common.ratio(value, peer_median),
                target,
                mark,
            ]
        )
    for name, value, base in (
        ("clean: bare FLUSHALL", bare_flush, bare_flush),
        ("clean: redis_clean", cleaner_flush, bare_flush),
        ("clean: bare FLUSHALL in pytest", bare_in_pytest, bare_in_pytest),
        ("clean: redis_clean in pytest", fixture_flush, bare_in_pytest),
        ("  (an empty fixture in pytest)", empty_fixture, bare_in_pytest),
    ):
        target, mark = "", ""
        if name.startswith("clean: redis_clean"):
            target = f"<= {CLEAN_FACTOR:g}x bare FLUSHALL"
            mark = verdict(value <= CLEAN_FACTOR * base)
        rows.append(
            [name, f"{value * 1e6:.1f} us", "", _common.ratio(value, base), "", target, mark]
        )
    _common.print_table(["", "median", "range", "vs bare", "vs pytest-redis", "target", ""], rows)
    if peer is None:
        print(f"pytest-redis not measured: {peer_label}")
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
