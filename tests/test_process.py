"""The process engine and ``watcher_getter``: real processes, started and stopped for real."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from proc_support import alive, processes_naming

from pytest_services.process import (
    CalledProcessWithOutputError,
    ServiceError,
    ServiceStartError,
    bounded,
    check_output,
    start_service,
)

# A small service: becomes ready by creating a file, optionally spawns a child, ignores
# SIGTERM, or dies at start.  It records the pids it owns so tests can check for survivors.
SERVICE = """
import argparse, os, signal, subprocess, sys, time

parser = argparse.ArgumentParser()
parser.add_argument("--ready")
parser.add_argument("--pids")
parser.add_argument("--child", action="store_true")
parser.add_argument("--ignore-term", action="store_true")
parser.add_argument("--exit", type=int)
parser.add_argument("--delay", type=float, default=0.0)
parser.add_argument("--drop-to", type=int)
args = parser.parse_args()

print("service starting", flush=True)
if args.exit is not None:
    print(f"fatal: cannot open the frobnicator (code {args.exit})", file=sys.stderr, flush=True)
    sys.exit(args.exit)
if args.ignore_term:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
pids = [os.getpid()]
if args.child:
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    pids.append(child.pid)
if args.pids:
    with open(args.pids + ".tmp", "w") as f:
        f.write(" ".join(map(str, pids)))
    os.rename(args.pids + ".tmp", args.pids)
if args.drop_to is not None:
    os.setgid(args.drop_to)
    os.setuid(args.drop_to)
time.sleep(args.delay)
if args.ready:
    open(args.ready, "w").close()
while True:
    time.sleep(1)
"""


def wait_gone(pids: list[int], seconds: float = 15.0) -> list[int]:
    """Wait until none of ``pids`` runs; return those still running after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [pid for pid in pids if alive(pid)]
        if not left:
            return []
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


def read_pids(path: Path) -> list[int]:
    return [int(pid) for pid in path.read_text().split()]


@pytest.fixture
def service_script(pytester: pytest.Pytester) -> Path:
    path = pytester.makepyfile(svc=SERVICE)
    path.chmod(0o755)
    path.write_text(f"#!{sys.executable}\n" + path.read_text())
    return path


def test_call_forms_of_real_conftest_files(pytester: pytest.Pytester, service_script: Path) -> None:
    pytester.makeconftest(
        """
        import os, pathlib, subprocess, sys, pytest

        HERE = pathlib.Path(__file__).parent

        def ready_file(name):
            path = HERE / name
            return lambda: str(path) if path.exists() else None  # truthy: a path string

        @pytest.fixture(scope="session")
        def session_service(watcher_getter, request):
            return watcher_getter(sys.executable, [HERE / "svc.py", "--ready", HERE / "s.ready"],
                                  checker=ready_file("s.ready"), request=request)

        @pytest.fixture(scope="module")
        def module_service(watcher_getter, request):
            return watcher_getter(name="./svc.py",
                                  arguments=["--ready", str(HERE / "m.ready")],
                                  kwargs={"env": dict(os.environ, SERVICE_FLAVOUR="module"),
                                          "cwd": str(HERE)},
                                  timeout=10, checker=ready_file("m.ready"), request=request)

        @pytest.fixture
        def function_service(watcher_getter, request, tmp_path):
            out = open(tmp_path / "out.txt", "wb")
            request.addfinalizer(out.close)
            code = "import time; print('hi', flush=True); time.sleep(60)"
            return watcher_getter("python3", ["-c", code],
                                  {"stdout": out, "stderr": subprocess.STDOUT},
                                  5, lambda: (tmp_path / "out.txt").read_text() == "hi\\n",
                                  request)
        """
    )
    pytester.makepyfile(
        """
        import subprocess

        def test_session(session_service):
            assert isinstance(session_service, subprocess.Popen)
            assert session_service.poll() is None and session_service.pid > 0

        def test_module(module_service):
            env = open(f"/proc/{module_service.pid}/environ", "rb").read()
            assert b"SERVICE_FLAVOUR=module" in env

        def test_function(function_service):
            assert function_service.poll() is None
            function_service.terminate()
            assert function_service.wait(10) != 0
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:xdist")
    result.assert_outcomes(passed=3)


def test_service_dying_at_start_is_reported_at_once(
    pytester: pytest.Pytester, service_script: Path
) -> None:
    pytester.makepyfile(
        f"""
        import sys

        def test_dies(watcher_getter, request):
            watcher_getter(sys.executable, [{str(service_script)!r}, "--exit", "3"],
                           checker=lambda: False, timeout=60, request=request)
        """
    )
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:xdist")
    elapsed = time.monotonic() - started
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*ServiceStartError: Service 'python*' exited with code 3 before it was ready*",
            "*command: *svc.py --exit 3",
            "*output: */logs/python*.log",
            "*last lines of its output:",
            "*service starting",
            "*fatal: cannot open the frobnicator (code 3)",
        ]
    )
    assert elapsed < 30, f"took {elapsed:.1f} s, as if it waited for the 60 s timeout"
    # The log named in the message outlives the session; nothing else of base_dir does.
    log_line = next(line for line in result.outlines if "output: " in line)
    log_path = Path(log_line.split("output: ", 1)[1].strip())
    assert "fatal: cannot open the frobnicator" in log_path.read_text()
    assert sorted(p.name for p in log_path.parent.parent.iterdir()) == ["logs"]


@pytest.mark.slow
def test_checker_that_never_succeeds_times_out_and_leaves_nothing(
    pytester: pytest.Pytester, service_script: Path
) -> None:
    pids = pytester.path / "pids"
    pytester.makepyfile(
        f"""
        import sys

        def never():
            return False

        def test_times_out(watcher_getter, request):
            watcher_getter(sys.executable, [{str(service_script)!r}, "--child", "--pids",
                           {str(pids)!r}], checker=never, timeout=1.5, request=request)
        """
    )
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:xdist")
    elapsed = time.monotonic() - started
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*Service 'python*' was not ready after 1.5 s: "
            "its checker never() never returned a true value*",
            "*service starting",
        ]
    )
    assert elapsed >= 1.5
    assert wait_gone(read_pids(pids), seconds=1) == []


def test_missing_binary_is_named(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_missing(watcher_getter, request):
            watcher_getter("no-such-server-binary", ["--port", "1"], checker=lambda: True,
                           request=request)

        def test_missing_relative(watcher_getter, request):
            watcher_getter("./bin/nothing-here", checker=lambda: True, request=request)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:xdist")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*ServiceError: Cannot start 'no-such-server-binary': no such executable on PATH*",
            "*ServiceError: Cannot start './bin/nothing-here': */bin/nothing-here does not exist.",
        ]
    )


def test_scopes_and_user_finalizers_in_order(
    pytester: pytest.Pytester, service_script: Path
) -> None:
    log = pytester.path / "events.log"
    pytester.makeconftest(
        f"""
        import os, sys, pytest

        SCRIPT = {str(service_script)!r}
        LOG = {str(log)!r}

        def event(text):
            with open(LOG, "a") as f:
                f.write(text + "\\n")

        def start(watcher_getter, request, name):
            ready = os.path.join(os.path.dirname(LOG), name + ".ready")
            proc = watcher_getter(sys.executable, [SCRIPT, "--ready", ready],
                                  checker=lambda: os.path.exists(ready), request=request)
            event(f"start {{name}} {{proc.pid}}")
            def user_finalizer():
                event(f"user-finalizer {{name}} alive={{proc.poll() is None}}")
            request.addfinalizer(user_finalizer)
            return proc

        @pytest.fixture(scope="session")
        def s(watcher_getter, request):
            return start(watcher_getter, request, "session")

        @pytest.fixture(scope="module")
        def m(watcher_getter, request):
            return start(watcher_getter, request, "module")

        @pytest.fixture
        def f(watcher_getter, request):
            return start(watcher_getter, request, "function")
        """
    )
    pytester.makepyfile(
        test_a="""
        def test_one(s, m, f):
            assert f.poll() is None

        def test_two(s, m, f):
            assert f.poll() is None
        """,
        test_b="""
        def test_three(m):
            assert m.poll() is None
        """,
    )
    result = pytester.runpytest_subprocess("-p", "no:xdist")
    result.assert_outcomes(passed=3)
    events = [
        line.split(" alive=")[0] + (" alive" if "alive=True" in line else "")
        for line in log.read_text().splitlines()
    ]
    kinds = [" ".join(e.split()[:2]) if e.startswith("start") else e for e in events]
    assert kinds == [
        "start session",
        "start module",
        "start function",
        "user-finalizer function alive",
        "start function",
        "user-finalizer function alive",
        "user-finalizer module alive",
        "start module",
        "user-finalizer module alive",
        "user-finalizer session alive",
    ]
    pids = [
        int(line.split()[2]) for line in log.read_text().splitlines() if line.startswith("start")
    ]
    assert len(set(pids)) == 5
    assert wait_gone(pids, seconds=1) == []


def test_term_ignoring_service_and_grandchildren_are_killed(
    pytester: pytest.Pytester, service_script: Path
) -> None:
    pids = pytester.path / "pids"
    pytester.makepyfile(
        f"""
        import os, sys

        def test_stubborn(watcher_getter, request):
            proc = watcher_getter(sys.executable, [{str(service_script)!r}, "--ignore-term",
                                  "--child", "--pids", {str(pids)!r}],
                                  checker=lambda: os.path.exists({str(pids)!r}),
                                  request=request, grace=0.5)
            assert proc.poll() is None
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:xdist")
    result.assert_outcomes(passed=1)
    owned = read_pids(pids)
    assert len(owned) == 2
    assert wait_gone(owned, seconds=1) == []


def test_omitting_request_warns_and_stops_at_session_end(
    pytester: pytest.Pytester, service_script: Path
) -> None:
    pids = pytester.path / "pids"
    pytester.makepyfile(
        f"""
        import os, sys

        def test_old_style(watcher_getter):
            watcher_getter(sys.executable, [{str(service_script)!r}, "--pids", {str(pids)!r}],
                           checker=lambda: os.path.exists({str(pids)!r}))
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:xdist")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(
        ["*ServicesWarning: watcher_getter(*) was called without request=request*"]
    )
    assert wait_gone(read_pids(pids), seconds=1) == []


KEEP_RUNNING = """
    import os, sys, time

    def test_hold(watcher_getter, request):
        for n in range(2):
            pids = {pids!r} + str(n)
            watcher_getter(sys.executable, [{script!r}, "--child", "--pids", pids] + {extra!r},
                           checker=lambda: os.path.exists(pids), request=request)
        with open({marker!r}, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(300)
"""


@contextlib.contextmanager
def inner_pytest_holding(
    pytester: pytest.Pytester, *markers: Path | str, args: tuple[str, ...] = ("-p", "no:xdist")
) -> Iterator[subprocess.Popen[bytes]]:
    """Run pytest in ``pytester.path`` until its tests create ``markers``; kill it at the end."""
    inner = subprocess.Popen(
        [sys.executable, "-m", "pytest", *args, "-p", "no:cacheprovider", "-q"],
        cwd=pytester.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not all(os.path.exists(marker) for marker in markers):
            assert inner.poll() is None, "inner pytest ended early"
            assert time.monotonic() < deadline, "inner pytest never started its services"
            time.sleep(0.05)
        yield inner
    finally:
        inner.kill()
        inner.wait()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
@pytest.mark.parametrize("drop", [False, True], ids=["same-user", "dropped-privileges"])
def test_nothing_outlives_a_killed_pytest(
    pytester: pytest.Pytester, service_script: Path, signum: int, drop: bool
) -> None:
    if drop and os.getuid() != 0:
        pytest.skip("dropping privileges needs root")
    pids, marker = str(pytester.path / "pids"), str(pytester.path / "running")
    extra = ["--drop-to", "65534"] if drop else []
    pytester.makepyfile(
        textwrap.dedent(KEEP_RUNNING).format(
            pids=pids, script=str(service_script), extra=extra, marker=marker
        )
    )
    with inner_pytest_holding(pytester, marker) as inner:
        owned = read_pids(Path(pids + "0")) + read_pids(Path(pids + "1"))
        assert all(alive(pid) for pid in owned)
        inner.send_signal(signum)
        inner.wait(30)
        assert wait_gone(owned, seconds=15) == [], "services survived their pytest"


def test_engine_without_pytest(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    proc = start_service(
        sys.executable,
        ["-c", f"import pathlib, time; pathlib.Path({str(ready)!r}).touch(); time.sleep(60)"],
        checker=ready.exists,
        log_dir=tmp_path / "logs",
    )
    try:
        assert proc.poll() is None
        assert proc.log_path is not None and proc.log_path.parent == tmp_path / "logs"
    finally:
        proc.stop(grace=0.2)
    assert proc.returncode is not None
    with pytest.raises(ServiceError, match="logs is not an executable file"):
        start_service(str(tmp_path / "logs"), checker=lambda: True)
    (tmp_path / "plain.txt").write_text("")
    with pytest.raises(ServiceError, match="plain.txt is not an executable file"):
        start_service(tmp_path / "plain.txt", checker=lambda: True)


def test_start_error_carries_details(tmp_path: Path) -> None:
    with pytest.raises(ServiceStartError) as info:
        start_service(
            "sh", ["-c", "echo broken config >&2; exit 7"], checker=lambda: False, log_dir=tmp_path
        )
    error = info.value
    assert error.returncode == 7
    assert error.tail == "broken config"
    assert error.log_path is not None and error.log_path.parent == tmp_path
    assert "sh -c 'echo broken config >&2; exit 7'" in str(error)


def test_check_output() -> None:
    out, err = check_output(["sh", "-c", "echo out; echo err >&2"])
    assert (out, err) == (b"out\n", b"err\n")
    with pytest.raises(CalledProcessWithOutputError) as info:
        check_output(["sh", "-c", "echo partial; echo oops >&2; exit 2"])
    assert isinstance(info.value, subprocess.CalledProcessError)
    assert (info.value.returncode, info.value.output, info.value.err) == (
        2,
        b"partial\n",
        b"oops\n",
    )
    assert "oops" in str(info.value)
    with pytest.raises(ValueError, match="stdout argument not allowed"):
        check_output(["true"], stdout=subprocess.PIPE)


def test_a_killed_watchdog_is_replaced_and_told_every_service(
    pytester: pytest.Pytester, service_script: Path
) -> None:
    pids, marker = pytester.path / "pids", pytester.path / "running"
    pytester.makepyfile(
        f"""
        import os, signal, sys, time
        from pytest_services._engine import reaper as _reaper

        def start(watcher_getter, request, n):
            path = {str(pids)!r} + str(n)
            watcher_getter(sys.executable, [{str(service_script)!r}, "--pids", path],
                           checker=lambda: os.path.exists(path), request=request)

        def test_hold(watcher_getter, request):
            start(watcher_getter, request, 0)
            first = _reaper.watchdog_pid()
            os.kill(first, signal.SIGKILL)
            while _reaper._watchdog.poll() is None:  # until it is really gone
                time.sleep(0.01)
            start(watcher_getter, request, 1)
            assert _reaper.watchdog_pid() not in (None, first)
            open({str(marker)!r}, "w").close()
            time.sleep(300)
        """
    )
    with inner_pytest_holding(pytester, marker) as inner:
        owned = read_pids(Path(f"{pids}0")) + read_pids(Path(f"{pids}1"))
        inner.kill()
        inner.wait(30)
        assert wait_gone(owned, seconds=15) == [], "services survived their pytest"


@pytest.mark.slow
def test_services_of_xdist_workers_die_with_their_controller(
    pytester: pytest.Pytester, service_script: Path
) -> None:
    folder = pytester.path
    pytester.makepyfile(
        f"""
        import os, signal, sys, time, pytest

        def test_hold(watcher_getter, request, worker_id):
            pids = os.path.join({str(folder)!r}, "pids-" + worker_id)
            watcher_getter(sys.executable, [{str(service_script)!r}, "--child", "--pids", pids],
                           checker=lambda: os.path.exists(pids), request=request)
            # A worker stuck in a long test: xdist cannot interrupt it when the controller dies.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            with open(os.path.join({str(folder)!r}, "worker-" + worker_id), "w") as f:
                f.write(str(os.getpid()))
            time.sleep(300)
        """
    )
    markers = [folder / "worker-gw0", folder / "worker-gw1"]
    with inner_pytest_holding(pytester, *markers, args=("-n", "2", "--dist", "each")) as controller:
        owned = read_pids(folder / "pids-gw0") + read_pids(folder / "pids-gw1")
        workers = [int(marker.read_text()) for marker in markers]
        try:
            controller.kill()
            controller.wait(30)
            assert wait_gone(owned, seconds=15) == [], "services survived their controller"
        finally:
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_any_number_of_starts_of_one_binary(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    names = set()
    for _ in range(1005):
        proc = start_service("sleep", ["60"], log_dir=logs, grace=0)
        proc.stop()
        assert proc.log_path is not None
        names.add(proc.log_path.name)
    assert len(names) == 1005
    assert {"sleep.log", "sleep-1.log", "sleep-1004.log"} <= names


def test_checker_that_hangs_cannot_hold_up_the_timeout(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import time

        def hangs():
            time.sleep(3600)

        def test_hangs(watcher_getter, request):
            watcher_getter("sleep", ["600"], checker=hangs, timeout=1, request=request)
        """
    )
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:xdist")
    assert time.monotonic() - started < 60
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*Service 'sleep' was not ready after 1 s: its checker hangs() was called and had "
            "not returned by then.*"
        ]
    )


def test_arguments_of_the_wrong_type_are_named(tmp_path: Path) -> None:
    with pytest.raises(TypeError) as caught:
        start_service("sleep", "100", log_dir=tmp_path)  # type: ignore[arg-type]
    assert str(caught.value) == (
        "arguments must be a list of strings, not the str '100': write ['100'] for one argument."
    )
    with pytest.raises(TypeError) as caught:
        start_service("sleep", ["--x", 5], log_dir=tmp_path)  # type: ignore[list-item]
    assert str(caught.value) == (
        "arguments[1] is the int 5; arguments must be str or pathlib.Path: write '5'."
    )
    assert list(tmp_path.iterdir()) == []  # nothing started, no log written


# Starts a service with the watchdog told late, as on a loaded machine, and says when the
# service is started but not yet watched: the moment the test kills this process.
LATE_WATCH = """
import os, pathlib, sys, time
from pytest_services._engine import reaper as _reaper
from pytest_services.process import start_service

marker, log_dir = sys.argv[1], sys.argv[2]
_reaper.start()
watch = _reaper.watch

def late_watch(pgid, tag=None):
    pathlib.Path(marker).touch()
    time.sleep(60)
    watch(pgid, tag)

_reaper.watch = late_watch
start_service("sleep", [os.environ["SLEEP_SECONDS"]], log_dir=log_dir)
"""


def test_a_service_whose_starter_dies_before_naming_its_group_is_stopped(
    tmp_path: Path,
) -> None:
    # The starter dies after the program runs and before the watchdog learns its group:
    # the watchdog knew its tag before the start, and finds it by that.
    marker, seconds = tmp_path / "started", f"617.{os.getpid()}1"  # no other run's
    starter = subprocess.Popen(
        [sys.executable, "-c", LATE_WATCH, str(marker), str(tmp_path / "logs")],
        env=dict(os.environ, SLEEP_SECONDS=seconds),
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert starter.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        running = processes_naming(seconds, whole_argument=True)
        assert len(running) == 1, "the service should run while its starter waits"
    finally:
        starter.kill()
        starter.wait()
    left = wait_gone(running)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], "the service outlived a starter that died before watching its group"


SLOW_EXEC = """
import os, signal, subprocess, sys
from pytest_services._engine import reaper as _reaper
from pytest_services._engine.commands import spawn_watched, _reaper as reaper
_reaper.start()

def slow_exec(command, env, **kwargs):
    # Like a program still being executed when its starter dies: it carries its tag only
    # a moment after the start.
    tag = env.pop(_reaper.TAG_VARIABLE)
    script = f"sleep 0.3; {_reaper.TAG_VARIABLE}={tag} exec sleep {os.environ['SLEEP_SECONDS']}"
    return subprocess.Popen(["/bin/sh", "-c", script], env=env, **kwargs)

reaper.watch = lambda pgid, tag=None: os.kill(os.getpid(), signal.SIGKILL)
spawn_watched(slow_exec, ["unused"], {})
"""


def test_a_program_still_starting_when_its_starter_dies_is_stopped() -> None:
    seconds = f"617.{os.getpid()}2"  # an argument no other run's process has
    starter = subprocess.run(
        [sys.executable, "-c", SLOW_EXEC], env=dict(os.environ, SLEEP_SECONDS=seconds), check=False
    )
    assert starter.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 3
    while not processes_naming(seconds, whole_argument=True) and time.monotonic() < deadline:
        time.sleep(0.02)  # it may be stopped before it ever runs: then this waits in vain
    left = wait_gone(processes_naming(seconds, whole_argument=True))
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], "a program tagged a moment after its starter died kept running"


def test_bounded_checkers_are_called_directly_others_on_a_thread(tmp_path: Path) -> None:
    threads: dict[str, str] = {}

    def plain() -> bool:
        threads["plain"] = threading.current_thread().name
        return True

    @bounded
    def quick() -> bool:
        threads["quick"] = threading.current_thread().name
        return True

    for checker in (plain, quick):
        start_service("sleep", ["60"], checker=checker, log_dir=tmp_path, grace=0).stop()
    assert threads == {"plain": "checker", "quick": threading.current_thread().name}


def test_repr_and_args_show_the_services_own_command(tmp_path: Path) -> None:
    proc = start_service("sleep", ["60"], checker=lambda: True, log_dir=tmp_path)
    try:
        assert proc.args == [proc.command[0], "60"]
        assert repr(proc) == f"<ServiceProcess: returncode: None args: {proc.command!r}>"
        assert "/bin/sh" not in repr(proc) and "read _" not in repr(proc)
    finally:
        proc.stop(grace=0.2)


@pytest.mark.parametrize("threaded", [False, True], ids=["bounded", "on-a-thread"])
@pytest.mark.parametrize("error", [ValueError("bad literal"), KeyError("port")], ids=repr)
def test_a_checker_raising_is_a_start_error_naming_the_service(
    tmp_path: Path, threaded: bool, error: Exception
) -> None:
    log = tmp_path / "logs" / "python.log"

    def parse_status() -> bool:
        if log.stat().st_size == 0:
            return False  # nothing printed yet: ask again
        raise error

    if not threaded:
        bounded(parse_status)
    code = "print('config loaded', flush=True); import time; time.sleep(60)"
    with pytest.raises(ServiceStartError) as info:
        start_service(sys.executable, ["-c", code], checker=parse_status, log_dir=tmp_path / "logs")
    message = str(info.value)
    assert info.value.__cause__ is error
    assert message.startswith(
        "Service 'python' was not ready: its checker test_a_checker_raising_is_a_start_error_"
        f"naming_the_service.<locals>.parse_status() raised {type(error).__name__}: {error}"
    )
    assert f"  command: {sys.executable} -c " in message
    assert f"  output: {log}" in message
    assert "    config loaded" in message
    assert wait_gone(processes_naming(code, whole_argument=True)) == []


# A server whose child daemonises: a new session (so a new process group) and a grandchild
# that init adopts.  The service itself keeps running.
DAEMONISING = """
import os, signal, sys, time
pidfile = sys.argv[1]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        if "--ignore-term" in sys.argv:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with open(pidfile + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(pidfile + ".tmp", pidfile)
        while True:
            time.sleep(1)
    os._exit(0)
os.wait()
while True:
    time.sleep(1)
"""


def _session_of(pid: int) -> tuple[int, int]:
    """The process group and session of ``pid``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[2]), int(fields[3])


@pytest.mark.parametrize("stubborn", [False, True], ids=["polite", "ignores-SIGTERM"])
def test_a_daemonised_child_is_stopped_with_its_service(
    pytester: pytest.Pytester, stubborn: bool
) -> None:
    pytester.makepyfile(daemonising=DAEMONISING)
    daemon_file = pytester.path / "daemon.pid"
    extra = ["--ignore-term"] if stubborn else []
    pytester.makepyfile(
        f"""
        import os, sys

        def test_daemon(watcher_getter, request):
            proc = watcher_getter(sys.executable, ["daemonising.py", {str(daemon_file)!r},
                                  *{extra!r}], checker=lambda: os.path.exists({str(daemon_file)!r}),
                                  request=request, grace=1)
            with open({str(daemon_file)!r}) as f:
                daemon = int(f.read())
            with open(f"/proc/{{daemon}}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            assert int(fields[2]) != proc.pgid and int(fields[3]) != proc.pgid
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:xdist")
    result.assert_outcomes(passed=1)
    daemon = int(daemon_file.read_text())
    try:
        assert wait_gone([daemon], seconds=15) == [], "the daemonised child outlived its session"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon, signal.SIGKILL)


def test_engine_stops_a_daemonised_child_without_pytest(tmp_path: Path) -> None:
    script = tmp_path / "daemonising.py"
    script.write_text(DAEMONISING)
    daemon_file = tmp_path / "daemon.pid"
    proc = start_service(
        sys.executable, [script, daemon_file], checker=daemon_file.exists, log_dir=tmp_path
    )
    daemon = int(daemon_file.read_text())
    try:
        assert _session_of(daemon)[0] != proc.pgid
        proc.stop(grace=1)
        assert wait_gone([daemon], seconds=15) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon, signal.SIGKILL)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_daemonised_child_dies_with_a_killed_pytest(
    pytester: pytest.Pytester, signum: int
) -> None:
    pytester.makepyfile(daemonising=DAEMONISING)
    daemon_file, marker = pytester.path / "daemon.pid", pytester.path / "running"
    pytester.makepyfile(
        f"""
        import os, sys, time

        def test_hold(watcher_getter, request):
            watcher_getter(sys.executable, ["daemonising.py", {str(daemon_file)!r},
                           "--ignore-term"], checker=lambda: os.path.exists({str(daemon_file)!r}),
                           request=request)
            with open({str(marker)!r}, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(300)
        """
    )
    daemon = 0
    try:
        with inner_pytest_holding(pytester, marker) as inner:
            daemon = int(daemon_file.read_text())
            assert alive(daemon)
            inner.send_signal(signum)
            inner.wait(30)
            assert wait_gone([daemon], seconds=15) == [], "the daemon outlived a killed pytest"
    finally:
        with contextlib.suppress(ProcessLookupError):
            if daemon:
                os.kill(daemon, signal.SIGKILL)


def test_nested_group_collectors_each_gather_their_own(tmp_path: Path) -> None:
    # A prepared state whose build needs the base data directory built first: two builds,
    # one inside the other, each must see the groups started while it runs.
    from pytest_services._engine.commands import collect_groups

    with collect_groups() as outer:
        with collect_groups() as inner:
            first = start_service("sleep", ["60"], log_dir=tmp_path, grace=0)
        second = start_service("sleep", ["60"], log_dir=tmp_path, grace=0)
    first.stop()
    second.stop()
    assert inner == {first.pid}
    assert outer == {first.pid, second.pid}
