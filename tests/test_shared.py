"""``shared_service``: one service per pytest-xdist run, started for real in inner sessions."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import xdist
from proc_support import alive

from pytest_services._run_keeper import KeeperClient, RunKeeper

# A tiny TCP server: answers every connection with its pid.
SERVER = """
import os, socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(16)
print("listening on", sys.argv[1], flush=True)
while True:
    conn, _ = server.accept()
    conn.sendall(str(os.getpid()).encode())
    conn.close()
"""

# ``search`` is a shared service; every start is counted in ``starts``, and every value a
# worker gets is written to ``seen-<worker>``.
CONFTEST = """
import json, os, socket, sys, time
import pytest

FOLDER = {folder!r}
SERVER = {server!r}
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "local")

def ask(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        return int(conn.recv(64))

def record(name, text):
    with open(os.path.join(FOLDER, name), "a") as f:
        f.write(text + "\\n")

def start(watcher_getter, port_getter):
    record("starts", WORKER)
    time.sleep(1)  # slow enough that the other workers wait for it
{body}

@pytest.fixture
def search(shared_service, worker_id):
    value = shared_service("search", start)
    record("seen-" + worker_id, json.dumps(value))
    return value
"""

STARTS_SERVER = """
    port = port_getter()
    data = {"cwd": watcher_getter.folder}  # a folder that lives as long as the service
    process = watcher_getter(sys.executable, [SERVER, str(port)], data, checker=lambda: ask(port))
    return {"port": port, "pid": process.pid, "worker": WORKER, "folder": watcher_getter.folder}
"""

USE = """
import os
from conftest import ask

def test_{n}_a(search):
    assert ask(search["port"]) == search["pid"]
    assert os.readlink(f"/proc/{{search['pid']}}/cwd") == search["folder"]

def test_{n}_b(search):
    assert ask(search["port"]) == search["pid"]

def test_{n}_c(search):
    assert ask(search["port"]) == search["pid"]
"""


def wait_gone(pid: int, seconds: float = 15.0) -> bool:
    """Wait until ``pid`` no longer runs; tell whether it is gone."""
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def make_suite(pytester: pytest.Pytester, body: str = STARTS_SERVER, files: int = 3) -> Path:
    folder = pytester.path
    server = pytester.makepyfile(server=SERVER)
    pytester.makeconftest(CONFTEST.format(folder=str(folder), server=str(server), body=body))
    for n in range(files):
        pytester.makepyfile(**{f"test_use{n}": USE.format(n=n)})
    return folder


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def seen(folder: Path) -> dict[str, list[dict[str, int]]]:
    """The values each worker got, by worker id."""
    return {
        path.name[len("seen-") :]: [json.loads(line) for line in lines(path)]
        for path in sorted(folder.glob("seen-*"))
    }


def leftover_folders() -> list[str]:
    return [name for name in os.listdir(os.environ["TMPDIR"]) if "pytest-services-shared" in name]


#: Every --dist mode of the pytest-xdist installed (worksteal came with 3.2).
DIST_MODES = ["each", "load", "loadscope", "loadfile", "loadgroup"]
if tuple(int(part) for part in xdist.__version__.split(".")[:2]) >= (3, 2):
    DIST_MODES.append("worksteal")


@pytest.mark.slow
@pytest.mark.parametrize("dist", DIST_MODES)
def test_one_start_per_run_and_every_worker_gets_its_value(
    pytester: pytest.Pytester, dist: str
) -> None:
    folder = make_suite(pytester)
    result = pytester.runpytest_subprocess("-n", "3", "--dist", dist)
    tests = 27 if dist == "each" else 9
    result.assert_outcomes(passed=tests)
    assert len(lines(folder / "starts")) == 1
    values = [value for worker in seen(folder).values() for value in worker]
    assert len(values) == tests
    assert all(value == values[0] for value in values)
    if dist == "each":
        assert sorted(seen(folder)) == ["gw0", "gw1", "gw2"]
    assert wait_gone(values[0]["pid"]), "the shared service outlived its run"
    assert leftover_folders() == []
    assert not os.path.exists(values[0]["folder"])


@pytest.mark.slow
def test_the_service_survives_the_worker_that_started_it(pytester: pytest.Pytester) -> None:
    folder = make_suite(pytester, files=0)
    pytester.makepyfile(
        test_crash="""
        import os, time
        from conftest import FOLDER, ask
        from pytest_services.locks import locked_resources

        def test_a_starter_crashes(search, worker_id):
            if search["worker"] == worker_id:
                with open(os.path.join(FOLDER, "crashed"), "w") as f:
                    f.write(str(os.getpid()))
                os._exit(1)

        def test_b_others_keep_using_it(search, lock_dir):
            marker = os.path.join(FOLDER, "crashed")
            deadline = time.monotonic() + 60
            while not os.path.exists(marker) or not open(marker).read():
                assert time.monotonic() < deadline, "the starting worker never crashed"
                time.sleep(0.05)
            time.sleep(3)  # time for the crashed worker's watchdog to do its work
            assert ask(search["port"]) == search["pid"]
            with locked_resources("port", lock_dir) as ports:
                assert search["port"] in ports, "the port was released with its worker"
        """
    )
    result = pytester.runpytest_subprocess("-n", "3", "--dist", "each")
    result.stdout.fnmatch_lines(["*worker*crashed while running*test_a_starter_crashes*"])
    # The crashed worker is replaced, and its replacement runs test_b too.
    result.assert_outcomes(passed=5, failed=1)
    assert len(lines(folder / "starts")) == 1
    values = [value for worker in seen(folder).values() for value in worker]
    assert len({json.dumps(value) for value in values}) == 1
    assert wait_gone(values[0]["pid"]), "the shared service outlived its run"


@pytest.mark.slow
def test_a_failing_start_gives_every_worker_the_same_error_once(
    pytester: pytest.Pytester,
) -> None:
    folder = make_suite(
        pytester, body='    raise RuntimeError("the index in /srv/search is corrupt")\n', files=1
    )
    result = pytester.runpytest_subprocess("-n", "3", "--dist", "each")
    result.assert_outcomes(errors=9)
    assert len(lines(folder / "starts")) == 1
    output = result.stdout.str()
    errors = re.findall(r"SharedServiceError: (Shared service 'search'.*)\nE +(\S.*)", output)
    assert len(errors) == 9
    assert len(set(errors)) == 1, "workers reported different errors"
    first, second = errors[0]
    assert re.fullmatch(
        r"Shared service 'search' failed to start in worker gw\d \(pid \d+\):", first
    )
    assert second == "RuntimeError: the index in /srv/search is corrupt"


@pytest.mark.slow
def test_a_service_that_fails_to_start_is_reported_with_its_output(
    pytester: pytest.Pytester,
) -> None:
    body = """
    code = "print('no index found'); raise SystemExit(3)"
    watcher_getter(sys.executable, ["-c", code], checker=lambda: False)
    """
    folder = make_suite(pytester, body=body, files=1)
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "each")
    result.assert_outcomes(errors=6)
    assert len(lines(folder / "starts")) == 1
    result.stdout.fnmatch_lines(
        [
            "E *SharedServiceError: Shared service 'search' failed to start in worker gw*",
            "E *ServiceStartError: Service 'python*' exited with code 3 before it was ready*",
            "E *command: *python* -c *",
            "E *output: *python.log",
            "E *last lines of its output:",
            "E *no index found",
        ]
    )
    log = re.search(r"E +output: (\S+)", result.stdout.str())
    assert log is not None
    assert Path(log.group(1)).read_text() == "no index found\n", "the log was not kept"


@pytest.mark.slow
def test_a_worker_dying_in_start_is_an_error_for_the_others(pytester: pytest.Pytester) -> None:
    folder = make_suite(pytester, body="    os._exit(1)\n", files=0)
    pytester.makepyfile(test_one="def test_uses(search):\n    pass\n")
    result = pytester.runpytest_subprocess("-n", "3", "--dist", "each")
    assert len(lines(folder / "starts")) == 1
    result.stdout.fnmatch_lines(
        [
            "E   *SharedServiceError: Shared service 'search' failed to start: worker gw? "
            "(pid *) died while running its start function; see that worker's crash report."
        ]
    )
    result.assert_outcomes(failed=1, errors=2)


@pytest.mark.slow
def test_waiting_longer_than_timeout_says_who_is_starting(pytester: pytest.Pytester) -> None:
    make_suite(pytester, body="    time.sleep(6)\n    return 1\n", files=0)
    pytester.makepyfile(
        test_wait="""
        import os, time
        from conftest import start

        def test_wait(shared_service):
            if os.environ["PYTEST_XDIST_WORKER"] != "gw0":
                time.sleep(0.5)  # gw0 asks first, and gives its start function longer
                assert shared_service("search", start, timeout=2) == 1
            assert shared_service("search", start, timeout=60) == 1
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "each")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "E *SharedServiceError: Shared service 'search' was not ready after 2 s: worker gw0 "
            "(pid *) is still running its start function. If it needs longer, pass a larger "
            "timeout: shared_service('search', start, timeout=...)."
        ]
    )


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_nothing_outlives_a_killed_controller(pytester: pytest.Pytester, signum: int) -> None:
    folder = make_suite(pytester, files=0)
    pytester.makepyfile(
        test_hold="""
        import os, signal, time
        from conftest import FOLDER

        def test_hold(search, worker_id):
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # busy in a long test
            with open(os.path.join(FOLDER, "worker-" + worker_id), "w") as f:
                f.write(str(os.getpid()))
            time.sleep(300)
        """
    )
    markers = [folder / "worker-gw0", folder / "worker-gw1"]
    args = ["-n", "2", "--dist", "each", "-p", "no:cacheprovider", "-q"]
    controller = subprocess.Popen(
        [sys.executable, "-m", "pytest", *args],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not all(marker.exists() and marker.read_text() for marker in markers):
            assert controller.poll() is None, "inner pytest ended early"
            assert time.monotonic() < deadline, "inner pytest never started its services"
            time.sleep(0.05)
        workers = [int(marker.read_text()) for marker in markers]
        service = seen(folder)["gw0"][0]["pid"]
        assert alive(service)
        controller.send_signal(signum)
        controller.wait(30)
        assert wait_gone(service), "the shared service survived its controller"
        deadline = time.monotonic() + 15
        while leftover_folders() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leftover_folders() == [], "the shared service's folder survived its controller"
    finally:
        controller.kill()
        controller.wait()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_outside_xdist_it_is_a_session_service(pytester: pytest.Pytester) -> None:
    folder = make_suite(pytester, files=2)
    conftest = pytester.path / "conftest.py"
    conftest.write_text(
        conftest.read_text()
        + textwrap.dedent(
            """
            def pytest_sessionfinish(session):
                with open(os.path.join(FOLDER, "seen-local")) as f:
                    pid = json.loads(f.readline())["pid"]
                record("at-session-finish", "running" if os.path.exists(f"/proc/{pid}") else "gone")
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:xdist", "--run-services")
    result.assert_outcomes(passed=6)
    assert lines(folder / "starts") == ["local"]
    values = seen(folder)["local"]
    assert len(values) == 6 and all(value == values[0] for value in values)
    # Stopped with the session's fixtures, not only by the watchdog when pytest exits.
    assert lines(folder / "at-session-finish") == ["gone"]


def test_without_run_services_nothing_starts(pytester: pytest.Pytester) -> None:
    folder = make_suite(pytester, files=0)
    pytester.makepyfile(test_off="def test_off(search):\n    assert search is None\n")
    result = pytester.runpytest_subprocess("-p", "no:xdist")
    result.assert_outcomes(passed=1)
    assert lines(folder / "starts") == []


@pytest.mark.slow
def test_two_runs_never_share_a_service(pytester: pytest.Pytester) -> None:
    folder = make_suite(pytester, files=1)
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "pytest", "-n", "2", "--dist", "each", "-p", "no:cacheprovider"],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    assert [run.wait(120) for run in runs] == [0, 0]
    assert len(lines(folder / "starts")) == 2
    values = {json.dumps(value) for worker in seen(folder).values() for value in worker}
    assert len(values) == 2, "two runs shared one service"


def test_keeper_without_pytest(tmp_path: Path) -> None:
    keeper = RunKeeper(log=logging.getLogger("test"))
    try:
        first = KeeperClient(keeper.run_id, keeper.pid, "one")
        second = KeeperClient(keeper.run_id, keeper.pid, "two")
        assert first.claim("cache", 1) == {"start": True}
        assert second.claim("cache", 0.1) == {"waiting": f"one (pid {os.getpid()})"}
        answers: list[dict[str, object]] = []
        waiter = threading.Thread(target=lambda: answers.append(second.claim("cache", 30)))
        waiter.start()
        port = first.port(str(tmp_path))
        service = subprocess.Popen(["sleep", "300"], start_new_session=True)
        first.finish("cache", {"value": {"port": port}}, [service.pid])
        waiter.join(30)
        assert answers == [{"value": {"port": port}}]
        first.close()  # the service belongs to the run, not to the client that started it
        time.sleep(0.2)
        assert service.poll() is None
    finally:
        keeper.close()
    assert service.wait(15) == -signal.SIGTERM


@pytest.mark.slow
def test_remote_style_workers_share_it_too(pytester: pytest.Pytester, tmp_path: Path) -> None:
    folder = make_suite(pytester, files=1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = pytester.runpytest_subprocess(
        "--tx", f"2*popen//chdir={elsewhere}", "--rsyncdir", str(folder), "--dist", "each"
    )
    result.assert_outcomes(passed=6)
    assert list(elsewhere.iterdir()), "the workers did not run elsewhere"
    assert len(lines(folder / "starts")) == 1
    values = [value for worker in seen(folder).values() for value in worker]
    assert len(values) == 6 and all(value == values[0] for value in values)


# A start function that starts a server, begins starting a second one that never becomes
# ready, and hangs there (its own watcher_getter timeout is far away).
HANGS = """
    port = port_getter()
    watcher_getter(sys.executable, [SERVER, str(port)], checker=lambda: ask(port))
    watcher_getter(sys.executable, [SERVER, str(port_getter())], checker=lambda: False,
                   timeout=600)
"""

AFTER_HANG = """
import sys, time
from conftest import SERVER
from proc_support import processes_naming

def test_z_what_start_started_was_stopped():
    deadline = time.monotonic() + 30
    while processes_naming(SERVER) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_naming(SERVER) == []
"""


@pytest.mark.parametrize("xdist", [True, False], ids=["xdist", "local"])
def test_a_start_that_hangs_times_out_once_for_everyone(
    pytester: pytest.Pytester, xdist: bool
) -> None:
    folder = make_suite(pytester, body=HANGS, files=2)
    conftest = pytester.path / "conftest.py"
    conftest.write_text(
        conftest.read_text().replace(
            'shared_service("search", start)', 'shared_service("search", start, timeout=3)'
        )
    )
    (pytester.path / "proc_support.py").write_text(
        (Path(__file__).parent / "proc_support.py").read_text()
    )
    pytester.makepyfile(test_z_after=AFTER_HANG)
    args = ["-n", "2", "--dist", "each"] if xdist else ["-p", "no:xdist", "--run-services"]
    result = pytester.runpytest_subprocess(*args, timeout=300)
    workers = 2 if xdist else 1
    result.assert_outcomes(errors=6 * workers, passed=workers)
    assert len(lines(folder / "starts")) == 1
    errors = re.findall(
        r"E +\S*SharedServiceError: (Shared service 'search'.*)", result.stdout.str()
    )
    assert len(errors) == 6 * workers
    assert len(set(errors)) == 1, "tests reported different errors"
    worker = r"gw\d" if xdist else "local"
    assert re.fullmatch(
        rf"Shared service 'search' was not ready after 3 s: its start function, run by worker "
        rf"{worker} \(pid \d+\), had not returned by then, and what it started was stopped\. "
        r"If it needs longer, pass a larger timeout: shared_service\('search', start, "
        r"timeout=\.\.\.\)\.",
        errors[0],
    ), errors[0]


def test_a_shared_service_that_dies_is_noticed_in_every_worker(pytester: pytest.Pytester) -> None:
    make_suite(pytester, files=0)
    pytester.makepyfile(
        test_death="""
        import os, signal, time
        from conftest import FOLDER, ask

        def gone(pid):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    return f.read().rsplit(")", 1)[1].split()[0] == "Z"
            except FileNotFoundError:
                return True

        def test_a_kills_it(search, worker_id):
            marker = os.path.join(FOLDER, "killed")
            if search["worker"] == worker_id:
                assert ask(search["port"]) == search["pid"]
                os.kill(search["pid"], signal.SIGKILL)
                open(marker, "w").close()
            deadline = time.monotonic() + 60
            while not (os.path.exists(marker) and gone(search["pid"])):
                assert time.monotonic() < deadline
                time.sleep(0.05)

        def test_b_needs_it(search):
            ask(search["port"])

        def test_c_does_not(worker_id):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "each")
    result.assert_outcomes(passed=4, errors=2)
    output = result.stdout.str()
    assert "ConnectionRefusedError" not in output
    # The starting worker is the service's parent; the other one watches it through /proc.
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_b_needs_it*",
            "service 'python*' (pid *) exited with code -9 (SIGKILL) by ??:??:??, *.* s ago, "
            "during test_death.py::test_a_kills_it; the fixture 'shared_service' that started "
            "it cannot be used any more.",
            "*command: *python* *server.py *",
            "*output: *logs/python*.log",
            "*last lines of its output:",
            "*listening on *",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_b_needs_it*",
            "service 'python*' (pid *) * by ??:??:?? (shared service 'search', started by "
            "another worker), *.* s ago, during test_death.py::test_a_kills_it; the shared "
            "services of this run cannot be used any more.",
            "*command: *python* *server.py *",
            "*output: *logs/python*.log",
            "*last lines of its output:",
            "*listening on *",
        ]
    )
    summary = output.split("services that died before their teardown", 1)[1]
    logs = re.findall(r"; log: (\S+)", summary)
    assert len(logs) == 1, summary  # every worker noticed it; the summary names it once
    assert "listening on" in Path(logs[0]).read_text(), "the log was not kept"
    assert leftover_folders() == [os.path.basename(Path(logs[0]).parents[1])]
    assert sorted(os.listdir(Path(logs[0]).parents[1])) == ["logs"]
