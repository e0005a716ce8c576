"""``--services-keep``: shared services kept between runs, in real inner sessions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from proc_support import alive

from pytest_services._keep import store
from pytest_services._keep.commands import stop_kept
from pytest_services._reserve.registry import is_taken

# A tiny TCP server: answers every connection with its pid.
SERVER = """
import os, socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(16)
while True:
    conn, _ = server.accept()
    conn.sendall(str(os.getpid()).encode())
    conn.close()
"""

# ``search`` is a kept shared service; every start is counted in ``starts``, and what each
# test got is written to ``seen``.
CONFTEST = """
import json, os, socket, sys, time
import pytest

FOLDER = {folder!r}
SERVER = {server!r}

def ask(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        return int(conn.recv(64))

def record(name, text):
    with open(os.path.join(FOLDER, name), "a") as f:
        f.write(text + "\\n")

def start(watcher_getter, port_getter):
    record("starts", str(os.getpid()))
    port = port_getter()
    process = watcher_getter(sys.executable, [SERVER, str(port)], checker=lambda: ask(port))
    return {{"port": port, "pid": process.pid}}

@pytest.fixture
def search(shared_service):
    value = shared_service("search", start, key={key!r}, concurrent={concurrent!r})
    assert ask(value["port"]) == value["pid"]
    record("seen", json.dumps(value))
    return value
"""

USE = """
def test_uses_it(search):
    assert search["pid"]
"""

# Writes ``here-<pid>`` and waits for as many such files as ``WAIT_FOR`` says.
USE_TOGETHER = """
import os, time
from conftest import FOLDER

def test_uses_it_with_another_run(search):
    open(os.path.join(FOLDER, f"here-{os.getpid()}"), "w").close()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if len([n for n in os.listdir(FOLDER) if n.startswith("here-")]) >= 2:
            return
        time.sleep(0.05)
    raise AssertionError("the other run never got its service")
"""

# Names the pytest process, then waits to be killed.
USE_AND_HANG = """
import os, time
from conftest import FOLDER

def test_uses_it_then_hangs(search):
    open(os.path.join(FOLDER, "hanging"), "w").write(str(os.getpid()))
    time.sleep(600)
"""


@pytest.fixture
def keep_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A keep folder of the test's own; whatever is still kept there is stopped after it."""
    folder = tmp_path / "kept"
    monkeypatch.setenv(store.KEEP_DIR_ENV, str(folder))
    monkeypatch.delenv("CI", raising=False)
    yield folder
    if folder.exists():
        stop_kept(str(folder), "all")


def make_suite(
    pytester: pytest.Pytester, *, key: object = None, concurrent: bool = False, test: str = USE
) -> Path:
    folder = pytester.path
    server = pytester.makepyfile(server=SERVER)
    pytester.makeconftest(
        CONFTEST.format(folder=str(folder), server=str(server), key=key, concurrent=concurrent)
    )
    pytester.makepyfile(test_use=test)
    return folder


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--run-services", *args)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def seen(folder: Path) -> list[dict[str, int]]:
    return [json.loads(line) for line in lines(folder / "seen")]


def wait_until(condition: object, seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return bool(condition())  # type: ignore[operator]


def kept_records(keep_dir: Path) -> list[store.Record]:
    found = []
    for key, slot in store.all_slots(str(keep_dir)):
        record, _ = store.read_record(slot, key)
        if record is not None:
            found.append(record)
    return found


def test_a_kept_service_serves_the_next_run_without_starting(
    pytester: pytest.Pytester, keep_dir: Path
) -> None:
    folder = make_suite(pytester)
    first = run(pytester, "--services-keep")
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(
        [
            "*kept services (--services-keep)*",
            "search: started and kept for 15 min after its "
            "last use (key *; not reused: no kept service yet)",
        ]
    )
    pid = seen(folder)[0]["pid"]
    assert alive(pid), "the run ended, and its kept service with it"
    (record,) = kept_records(keep_dir)
    assert is_taken("port", record.ports[0], str(keep_dir)), "its port is not reserved"

    second = run(pytester, "--services-keep")
    second.assert_outcomes(passed=1)
    second.stdout.fnmatch_lines(["search: reused (key *; kept * ago, 2 runs)"])
    assert len(lines(folder / "starts")) == 1, "the second run called start"
    assert [value["pid"] for value in seen(folder)] == [pid, pid]


def test_without_the_option_nothing_is_kept(pytester: pytest.Pytester, keep_dir: Path) -> None:
    folder = make_suite(pytester)
    run(pytester).assert_outcomes(passed=1)
    first = seen(folder)[0]["pid"]
    assert wait_until(lambda: not alive(first), 30), "a service outlived its run"
    run(pytester).assert_outcomes(passed=1)
    assert len(lines(folder / "starts")) == 2
    assert kept_records(keep_dir) == []


@pytest.mark.parametrize("change", ["start function", "key"])
def test_a_changed_start_or_key_starts_a_new_one(
    pytester: pytest.Pytester, keep_dir: Path, change: str
) -> None:
    folder = make_suite(pytester, key="v1")
    run(pytester, "--services-keep").assert_outcomes(passed=1)
    old = seen(folder)[0]["pid"]
    if change == "key":
        make_suite(pytester, key="v2")
    else:
        conftest = pytester.path / "conftest.py"
        conftest.write_text(conftest.read_text().replace('record("starts"', 'record("starts" '))
    result = run(pytester, "--services-keep")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["search: started and kept * (key *; not reused: key changed)"])
    new = seen(folder)[1]["pid"]
    assert new != old
    assert len(lines(folder / "starts")) == 2
    assert wait_until(lambda: not alive(old), 30), "the copy kept for the old key still runs"
    assert [record.processes[0].pid for record in kept_records(keep_dir)] == [new]


def _start_together(pytester: pytest.Pytester, *args: str) -> list[subprocess.Popen[str]]:
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--run-services", *args]
    return [
        subprocess.Popen(
            command, cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]


@pytest.mark.parametrize("concurrent", [False, True])
def test_two_runs_at_once_share_a_service_only_if_it_says_it_can(
    pytester: pytest.Pytester, keep_dir: Path, concurrent: bool
) -> None:
    folder = make_suite(pytester, concurrent=concurrent, test=USE_TOGETHER)
    runs = _start_together(pytester, "--services-keep")
    outputs = [process.communicate(timeout=300)[0] for process in runs]
    assert [process.returncode for process in runs] == [0, 0], outputs
    pids = {value["pid"] for value in seen(folder)}
    if concurrent:
        assert len(pids) == 1, "a concurrent service was started twice"
        assert len(lines(folder / "starts")) == 1
    else:
        assert len(pids) == 2, "two runs at once were given the same kept service"
        assert len(kept_records(keep_dir)) == 2
    # Both copies (or the one) serve the next run alone, without a start.
    starts = len(lines(folder / "starts"))
    make_suite(pytester, concurrent=concurrent)
    run(pytester, "--services-keep").assert_outcomes(passed=1)
    assert len(lines(folder / "starts")) == starts
    assert seen(folder)[-1]["pid"] in pids


def test_the_idle_timeout_stops_it_after_every_run_was_killed(
    pytester: pytest.Pytester, keep_dir: Path
) -> None:
    folder = make_suite(pytester, test=USE_AND_HANG)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--run-services"]
    inner = subprocess.Popen(
        [*command, "--services-keep=0.05"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert wait_until(lambda: (folder / "hanging").exists(), 120), "the run never started"
        (value,) = seen(folder)
        (record,) = kept_records(keep_dir)
    finally:
        inner.kill()  # SIGKILL: no teardown, no unconfigure
        inner.wait()
    pid, keeper, port = value["pid"], record.keeper_pid, record.ports[0]
    time.sleep(1)
    assert alive(pid), "the kept service did not outlive the killed run"
    assert is_taken("port", port, str(keep_dir))
    assert wait_until(lambda: not alive(pid) and not alive(keeper), 60), "it was never stopped"
    assert kept_records(keep_dir) == []
    assert wait_until(lambda: not is_taken("port", port, str(keep_dir)), 10), "port still held"


def test_a_service_that_died_while_kept_is_replaced(
    pytester: pytest.Pytester, keep_dir: Path
) -> None:
    folder = make_suite(pytester)
    run(pytester, "--services-keep").assert_outcomes(passed=1)
    old = seen(folder)[0]["pid"]
    os.kill(old, signal.SIGKILL)
    assert wait_until(lambda: not alive(old), 30)
    result = run(pytester, "--services-keep")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["search: started and kept * (key *; not reused: service died)"])
    assert seen(folder)[1]["pid"] != old


def test_a_corrupt_or_planted_record_is_never_trusted(
    pytester: pytest.Pytester, keep_dir: Path
) -> None:
    folder = make_suite(pytester)
    run(pytester, "--services-keep").assert_outcomes(passed=1)
    old = seen(folder)[0]["pid"]
    (key, slot), *_ = store.all_slots(str(keep_dir))
    Path(slot, store.RECORD).write_text("{not json")
    result = run(pytester, "--services-keep")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*not reused: corrupt record*: discarded)"])
    assert wait_until(lambda: not alive(old), 30), "the service of a corrupt record still runs"
    # A well-formed record naming processes that are not the service's: none is signalled.
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        record, _ = store.read_record(slot, key)
        assert record is not None
        stop_kept(str(keep_dir), "all")
        record.keeper_pid = record.processes[0].pid = bystander.pid
        store.write_record(slot, record)
        result = run(pytester, "--services-keep")
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines(["*not reused: service died)"])
        assert bystander.poll() is None, "a process named by a record was signalled"
    finally:
        bystander.kill()
        bystander.wait()


def test_list_and_stop(pytester: pytest.Pytester, keep_dir: Path) -> None:
    folder = make_suite(pytester)
    empty = pytester.runpytest_subprocess("--services-list")
    assert empty.ret == 0
    empty.stdout.fnmatch_lines([f"no kept services (in {keep_dir})"])
    run(pytester, "--services-keep").assert_outcomes(passed=1)
    pid = seen(folder)[0]["pid"]
    listed = pytester.runpytest_subprocess("--services-list")
    assert listed.ret == 0
    listed.stdout.fnmatch_lines(
        [
            f"kept services (in {keep_dir}):",
            f"search: key *, copy 0, pid {pid}",
            "  age * s, idle * s, runs 1 (attached now: 0)",
            f"  command: {sys.executable} {pytester.path / 'server.py'} *",
            f"  log: {keep_dir}/*/0/logs/python.log",
            f"  checkout: {pytester.path}",
        ]
    )
    assert "passed" not in listed.stdout.str() and "collected" not in listed.stdout.str()
    unknown = pytester.runpytest_subprocess("--services-stop", "nothing")
    assert unknown.ret == pytest.ExitCode.USAGE_ERROR
    unknown.stdout.fnmatch_lines(["no kept service matches 'nothing'"])
    assert alive(pid)
    stopped = pytester.runpytest_subprocess("--services-stop", "search")
    assert stopped.ret == 0
    stopped.stdout.fnmatch_lines(["stopped search (key *)"])
    assert not alive(pid)
    assert kept_records(keep_dir) == []
    run(pytester, "--services-keep").assert_outcomes(passed=1)
    pytester.runpytest_subprocess("--services-stop").stdout.fnmatch_lines(["stopped search *"])
    assert not alive(seen(folder)[1]["pid"])


@pytest.mark.parametrize("given", [False, True])
def test_ci_keeps_nothing_unless_asked_on_the_command_line(
    pytester: pytest.Pytester, keep_dir: Path, monkeypatch: pytest.MonkeyPatch, given: bool
) -> None:
    folder = make_suite(pytester)
    pytester.makeini("[pytest]\nservices_keep = true\n")
    monkeypatch.setenv("CI", "true")
    args = ["-v", *(["--services-keep=5"] if given else [])]
    first = run(pytester, *args)
    first.assert_outcomes(passed=1)
    run(pytester, *args).assert_outcomes(passed=1)
    if given:
        first.stdout.fnmatch_lines(
            ["services keep: shared services kept 5 min after their last use (--services-keep)*"]
        )
        assert len(lines(folder / "starts")) == 1
    else:
        first.stdout.fnmatch_lines(
            ["services keep: off, CI is set (pass --services-keep to keep services in CI)"]
        )
        assert "kept services" not in first.stdout.str()
        assert len(lines(folder / "starts")) == 2
        assert kept_records(keep_dir) == []


def test_the_ini_option_keeps_outside_ci(pytester: pytest.Pytester, keep_dir: Path) -> None:
    folder = make_suite(pytester)
    pytester.makeini("[pytest]\nservices_keep = 0.5\n")
    first = run(pytester, "-v")
    first.stdout.fnmatch_lines(
        ["services keep: shared services kept 0.5 min after their last use (the services_keep*"]
    )
    run(pytester).assert_outcomes(passed=1)
    assert len(lines(folder / "starts")) == 1


def test_bad_values_are_usage_errors(pytester: pytest.Pytester, keep_dir: Path) -> None:
    make_suite(pytester)
    result = run(pytester, "--services-keep=soon")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*Invalid --services-keep value 'soon': give the idle timeout*"])
    pytester.makeini("[pytest]\nservices_keep = later\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*Invalid services_keep ini value 'later'*"])


def test_kept_across_pytest_xdist_runs(pytester: pytest.Pytester, keep_dir: Path) -> None:
    folder = make_suite(pytester)
    for n in range(3):
        pytester.makepyfile(**{f"test_more{n}": USE.replace("test_uses_it", f"test_{n}")})
    first = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--services-keep")
    first.assert_outcomes(passed=4)
    first.stdout.fnmatch_lines(["search: started and kept for 15 min *"])
    second = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--services-keep")
    second.assert_outcomes(passed=4)
    second.stdout.fnmatch_lines(["search: reused (key *"])
    assert len(lines(folder / "starts")) == 1
    assert len({value["pid"] for value in seen(folder)}) == 1
