"""The ready-made checkers, each against a real server started through ``watcher_getter``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_services import checkers
from pytest_services.process import start_service

RUN = ("-p", "no:xdist", "--run-services")


def test_tcp_and_http_against_a_real_http_server(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import sys, pytest
        from pytest_services import checkers

        @pytest.fixture(scope="session")
        def web(watcher_getter, port_getter, request, tmp_path_factory):
            root = tmp_path_factory.mktemp("web")
            (root / "health").write_text("ok")
            port = port_getter()
            url = f"http://127.0.0.1:{port}"
            checker = checkers.all_of(checkers.tcp(port), checkers.http(f"{url}/health"))
            watcher_getter(sys.executable,
                           ["-m", "http.server", "-b", "127.0.0.1", "-d", root, str(port)],
                           checker=checker, timeout=20, request=request)
            return port, url, checker
        """
    )
    pytester.makepyfile(
        """
        from pytest_services import checkers

        def test_ready(web):
            port, url, checker = web
            assert checker() is True
            assert repr(checker) == (
                f"all_of(tcp(127.0.0.1:{port}), http(http://127.0.0.1:{port}/health))")
            assert checkers.http(url + "/missing")() is False
            missing = checkers.http(url + "/missing", status=404)
            assert missing() is True
            assert repr(missing) == f"http(http://127.0.0.1:{port}/missing, status=404)"
            teapot = checkers.http(url + "/missing", status={200, 204})
            assert teapot() is False
            assert repr(teapot) == (
                f"http(http://127.0.0.1:{port}/missing, status=200|204, last answer 404)")

        def test_nobody_listening(port_getter):
            port = port_getter()
            assert checkers.tcp(port)() is False
            assert checkers.http(f"http://127.0.0.1:{port}/")() is False
        """
    )
    result = pytester.runpytest_subprocess(*RUN)
    result.assert_outcomes(passed=2)


UNIX_SERVER = """
import socket, sys, time
time.sleep(0.3)
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(sys.argv[1])
server.listen()
while True:
    server.accept()[0].close()
"""


def test_unix_socket_and_path_exists(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(unix_server=UNIX_SERVER)
    pytester.makepyfile(
        """
        import os, socket, sys
        from pytest_services import checkers

        def test_ready(watcher_getter, run_dir, request):
            path = os.path.join(run_dir, "srv.sock")
            checker = checkers.unix_socket(path)
            assert checker() is False
            watcher_getter(sys.executable, ["unix_server.py", path],
                           checker=checker, timeout=20, request=request)
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(path)
            assert repr(checker) == f"unix_socket({path})"
            assert checkers.path_exists(path)() is True
            assert repr(checkers.path_exists(path)) == f"path_exists({path})"
            assert checkers.path_exists(path + ".nope")() is False
        """
    )
    result = pytester.runpytest_subprocess(*RUN)
    result.assert_outcomes(passed=1)


LATE_PRINTER = """
import sys, time
print("starting up", flush=True)
time.sleep(0.5)
print("loading data...", flush=True, end="")
time.sleep(0.2)
print(" done", flush=True)
print("ready: accepting connections on port 4711", file=sys.stderr, flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_output_waits_for_a_line_printed_late(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(late=LATE_PRINTER)
    pytester.makepyfile(
        """
        import re, sys
        from pytest_services import checkers

        def test_ready(watcher_getter, request):
            checker = checkers.output(r"accepting connections on port \\d+")
            proc = watcher_getter(sys.executable, ["late.py"], checker=checker, timeout=20,
                                  request=request)
            assert "accepting connections on port 4711" in proc.log_path.read_text()
            assert repr(checker) == r"output('accepting connections on port \\\\d+')"

        def test_compiled_bytes_and_split_lines(watcher_getter, request):
            # "loading data... done" arrives in two writes: still one line to match.
            checker = checkers.all_of(checkers.output(re.compile(b"data\\\\.\\\\.\\\\. done")),
                                      checkers.output("ready"))
            proc = watcher_getter(sys.executable, ["late.py"], checker=checker, timeout=20,
                                  request=request)
            assert "ready" in proc.log_path.read_text()
        """
    )
    result = pytester.runpytest_subprocess(*RUN)
    result.assert_outcomes(passed=2)


def test_output_refuses_redirected_output(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import subprocess
        from pytest_services import checkers

        def test_redirected(watcher_getter, request):
            watcher_getter("sleep", ["60"], {"stdout": subprocess.DEVNULL,
                                             "stderr": subprocess.DEVNULL},
                           checker=checkers.output("ready"), request=request)

        def test_unbound():
            checkers.output("ready")()
        """
    )
    result = pytester.runpytest_subprocess(*RUN)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*CheckerError: output('ready') reads the output that pytest-services captures, "
            "but this service's output is not captured: stdout/stderr were passed in kwargs*"
            "Leave stdout and stderr out of kwargs, or use another checker*",
            "*CheckerError: output('ready') has no output to read: pass it as checker= to "
            "watcher_getter()*",
        ]
    )


@pytest.mark.slow
def test_checker_that_never_passes_is_named_by_its_repr(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_services import checkers

        def test_never(watcher_getter, port_getter, request):
            port = port_getter()
            watcher_getter("sleep", ["60"], checker=checkers.tcp(port), timeout=1,
                           request=request)

        def test_never_all(watcher_getter, port_getter, request, tmp_path):
            port = port_getter()
            checker = checkers.all_of(checkers.path_exists(tmp_path / "pid"),
                                      lambda: True,
                                      checkers.http(f"http://127.0.0.1:{port}/up", status=204))
            watcher_getter("sleep", ["60"], checker=checker, timeout=1, request=request)
        """
    )
    result = pytester.runpytest_subprocess(*RUN)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*Service 'sleep' was not ready after 1 s: its checker tcp(127.0.0.1:*) "
            "never returned a true value; the last check said: connection refused.",
            "*Service 'sleep' was not ready after 1 s: its checker all_of(path_exists(*/pid), "
            "test_never_all.<locals>.<lambda>(), http(http://127.0.0.1:*/up, status=204)) "
            "never returned a true value; the last check said: path_exists(*/pid): it does "
            "not exist.",
        ]
    )


def test_bad_arguments_are_refused_at_once() -> None:
    from pytest_services import checkers

    with pytest.raises(checkers.CheckerError, match="give an absolute http:// or https:// URL"):
        checkers.http("127.0.0.1:8000/health")
    with pytest.raises(checkers.CheckerError, match="needs at least one checker"):
        checkers.all_of()


def test_the_process_started_is_attached_to_checkers_before_their_first_call(
    tmp_path: Path,
) -> None:
    class Expecting:
        def __init__(self) -> None:
            self.calls: list[object] = []

        def attach(self, process: object) -> None:
            self.calls.append(process)

        def __call__(self) -> bool:
            self.calls.append("called")
            return True

    alone, member = Expecting(), Expecting()
    for checker in (alone, checkers.all_of(member, lambda: True)):
        service = start_service("sleep", ["60"], checker=checker, log_dir=tmp_path)
        service.stop(grace=0)
    first, second = (s.calls for s in (alone, member))
    assert [type(first[0]).__name__, first[1:]] == ["ServiceProcess", ["called"]]
    assert [type(second[0]).__name__, second[1:]] == ["ServiceProcess", ["called"]]
    assert first[0] is not second[0]


def test_output_anchors_mean_lines_however_the_output_is_chunked(tmp_path: Path) -> None:
    from pytest_services import checkers

    def chunks(pattern: str, *parts: str) -> list[bool]:
        """What the checker says after each part is appended to a real log file."""
        log = tmp_path / f"log-{len(list(tmp_path.iterdir()))}"
        log.write_text("")
        checker = checkers.output(pattern)
        checker.bind(log)  # type: ignore[attr-defined]
        answers = []
        for part in parts:
            with open(log, "a") as stream:
                stream.write(part)
            answers.append(checker())
        return answers

    # One chunk or three: the same line, the same answer.
    assert chunks(r"^Ready$", "starting\nReady\n") == [True]
    assert chunks(r"^Ready$", "starting\n", "Re", "ady\n") == [False, False, True]
    # "Ready" at the end of what was written so far is not a line that ends there yet.
    assert chunks(r"Ready$", "Ready", " to go\n", "Ready\n") == [False, False, True]
    assert chunks(r"^port \d+$", "listening on\nport 80", "80\n") == [False, True]
    # Lines of earlier chunks are seen again: a match may span chunks.
    assert chunks(r"^loaded\n^serving", "loaded\n", "serving\n") == [False, True]
    # A compiled pattern keeps its own flags, and is searched line by line too.
    assert chunks(re.compile(r"^READY$", re.IGNORECASE), "boot\nready\n") == [True]  # type: ignore[arg-type]


def test_output_anchors_with_a_real_service(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        printer="""
        import time
        print("starting\\nReady", flush=True)
        time.sleep(600)
        """
    )
    pytester.makepyfile(
        """
        import sys
        from pytest_services import checkers

        def test_ready(watcher_getter, request):
            watcher_getter(sys.executable, ["printer.py"], checker=checkers.output("^Ready$"),
                           timeout=20, request=request)
        """
    )
    result = pytester.runpytest_subprocess(*RUN)
    result.assert_outcomes(passed=1)


SILENT_SERVER = """
import socket, sys, time
server = socket.socket()
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(64)
print("accepting, and never answering", flush=True)
time.sleep(600)
"""


def test_http_errors_say_why_the_last_check_failed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(silent=SILENT_SERVER)
    pytester.makepyfile(
        """
        import sys
        from pytest_services import checkers

        def test_never_answers(watcher_getter, port_getter, request):
            port = port_getter()
            watcher_getter(sys.executable, ["silent.py", str(port)],
                           checker=checkers.http(f"http://127.0.0.1:{port}/health"),
                           timeout=2, request=request)

        def test_refused(watcher_getter, port_getter, request):
            port = port_getter()
            watcher_getter("sleep", ["60"], checker=checkers.tcp(port), timeout=1,
                           request=request)

        def test_wrong_status(watcher_getter, port_getter, request):
            port = port_getter()
            watcher_getter(sys.executable, ["-m", "http.server", "-b", "127.0.0.1", str(port)],
                           checker=checkers.all_of(checkers.tcp(port),
                                                   checkers.http(f"http://127.0.0.1:{port}/up")),
                           timeout=2, request=request)
        """
    )
    result = pytester.runpytest_subprocess(*RUN)
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(
        [
            "*Service 'python*' was not ready after 2 s: its checker "
            "http(http://127.0.0.1:*/health) never returned a true value; the last check "
            "said: no answer within 0.5 s.",
            "*Service 'sleep' was not ready after 1 s: its checker tcp(127.0.0.1:*) never "
            "returned a true value; the last check said: connection refused.",
            "*Service 'python*' was not ready after 2 s: its checker all_of(tcp(127.0.0.1:*), "
            "http(http://127.0.0.1:*/up, last answer 404)) never returned a true value; the "
            "last check said: http(http://127.0.0.1:*/up, last answer 404): answered 404.",
        ]
    )
