"""Service output in failing tests' reports, and services that die before their teardown."""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

# A service that prints every message a client sends it, and answers once it has printed it.
LOGGER = f"""#!{sys.executable}
import os, socket, sys
print(os.path.basename(sys.argv[0]), "starting", flush=True)
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(sys.argv[1])
server.listen()
while True:
    conn, _ = server.accept()
    with conn:
        data = conn.recv(4096)
        if data:  # readiness checks connect and hang up
            print(data.decode(), flush=True)
            conn.sendall(b"ok")
"""

CONFTEST = """
import os, socket, pytest
from pytest_services import checkers

def start(watcher_getter, request, run_dir, name):
    path = os.path.join(run_dir, name + ".sock")
    proc = watcher_getter(f"./{name}.py", [path], checker=checkers.unix_socket(path),
                          request=request)
    return proc, path

def say(service, text):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(service[1])
        conn.sendall(text.encode())
        assert conn.recv(16) == b"ok"

@pytest.fixture(scope="session")
def chatty(watcher_getter, request, run_dir):
    return start(watcher_getter, request, run_dir, "chatty")

@pytest.fixture(scope="session")
def quiet(watcher_getter, request, run_dir):
    return start(watcher_getter, request, run_dir, "quiet")

@pytest.fixture
def noisy_teardown(chatty):
    yield
    say(chatty, "teardown is breaking")
    raise RuntimeError("teardown broke")
"""

RUN = ("-p", "no:xdist", "--run-services")
SECTION = re.compile(
    r"^-+ Captured stdout of service '([^']+)' \(pid \d+\) -+\n"
    # A teardown report's sections open with a line naming the service (for JUnit XML).
    r"(?:--- service '[^']+' \(pid \d+\), log \S+ ---\n)?(.*?)\n+(?=[-=_])",
    re.MULTILINE | re.DOTALL,
)


def service_sections(text: str) -> list[tuple[str, str]]:
    """The (service, content) of each service section in pytest's output, in order."""
    return SECTION.findall(text)


@pytest.fixture
def services(pytester: pytest.Pytester) -> None:
    for name in ("chatty", "quiet"):
        script = pytester.path / f"{name}.py"
        script.write_text(LOGGER)
        script.chmod(0o755)
    pytester.makeconftest(CONFTEST)


def test_failing_test_shows_what_each_service_wrote_during_it(
    pytester: pytest.Pytester, services: None
) -> None:
    pytester.makepyfile(
        """
        from conftest import say

        def test_one(chatty, quiet):
            say(chatty, "hello from test_one")
            say(quiet, "quiet speaks in test_one")

        def test_two(chatty, quiet):
            say(chatty, "boom in test_two")
            assert False, "test_two failed"

        def test_three(chatty, noisy_teardown):
            say(chatty, "all fine in test_three")
        """
    )
    result = pytester.runpytest_subprocess(
        *RUN, "--junitxml=out.xml", "-o", "junit_logging=system-out"
    )
    result.assert_outcomes(passed=2, failed=1, errors=1)
    text = result.stdout.str()
    errors, failures = text.split("= FAILURES =")
    assert service_sections(failures) == [
        ("chatty.py", "boom in test_two"),
        ("quiet.py", "no output during this test"),
    ]
    assert service_sections(errors) == [
        ("chatty.py", "all fine in test_three\nteardown is breaking"),
        ("quiet.py", "no output during this test"),
    ]
    assert "hello from test_one" not in text
    # The same sections reach JUnit XML through pytest's captured-output mechanism.
    tree = ET.parse(pytester.path / "out.xml")
    cases = {case.get("name"): case for case in tree.iter("testcase")}
    out = cases["test_two"].findtext("system-out") or ""
    assert "boom in test_two" in out and "no output during this test" in out
    assert "hello from test_one" not in out


def test_ini_option_sets_the_line_count_or_turns_sections_off(
    pytester: pytest.Pytester, services: None
) -> None:
    pytester.makepyfile(
        """
        from conftest import say

        def test_fails(chatty):
            for n in range(5):
                say(chatty, f"line {n}")
            assert False
        """
    )
    pytester.makeini("[pytest]\nservices_report_lines = 2\n")
    result = pytester.runpytest_subprocess(*RUN)
    result.assert_outcomes(failed=1)
    assert service_sections(result.stdout.str()) == [("chatty.py", "line 3\nline 4")]

    pytester.makeini("[pytest]\nservices_report_lines = 0\n")
    result = pytester.runpytest_subprocess(*RUN)
    result.assert_outcomes(failed=1)
    assert "Captured stdout of service" not in result.stdout.str()

    pytester.makeini("[pytest]\nservices_report_lines = many\n")
    result = pytester.runpytest_subprocess(*RUN)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*services_report_lines must be a whole number of lines written with the digits "
            "0-9, such as 20 (0 turns the service sections off), not 'many'*"
        ]
    )


def test_service_killed_mid_session(pytester: pytest.Pytester, services: None) -> None:
    pytester.makepyfile(
        test_a="""
        import os, signal, time
        from conftest import say

        def test_kills(chatty, quiet):
            say(chatty, "last words of chatty")
            os.kill(chatty[0].pid, signal.SIGKILL)
            time.sleep(0.2)

        def test_needs_it(chatty):
            say(chatty, "never reached")

        def test_does_not_need_it(quiet):
            say(quiet, "quiet is fine")

        def test_needs_it_too(chatty):
            pass

        def test_kills_quiet_last(quiet):
            os.kill(quiet[0].pid, signal.SIGTERM)
            time.sleep(0.2)
        """
    )
    result = pytester.runpytest_subprocess(*RUN)
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_needs_it*",
            "service 'chatty.py' (pid *) exited with code -9 (SIGKILL) by "
            "??:??:??, *.* s ago, during test_a.py::test_kills; the fixture 'chatty' that "
            "started it cannot be used any more.",
            "*command: *chatty.py *chatty.sock",
            "*output: */logs/chatty.py.log",
            "*last lines of its output:",
            "*chatty.py starting",
            "*last words of chatty",
            "*ERROR at setup of test_needs_it_too*",
            "service 'chatty.py' (pid *) exited with code -9*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*= services that died before their teardown =*",
            "service 'chatty.py' (pid *) exited with code -9 (SIGKILL) by ??:??:??, during "
            "test_a.py::test_kills; log: */logs/chatty.py.log",
            "service 'quiet.py' (pid *) exited with code -15 (SIGTERM) by ??:??:??, during "
            "test_a.py::test_kills_quiet_last; log: */logs/quiet.py.log",
        ]
    )
    # pytest 8 adds the message to the summary line; pytest 7 names the test only.
    result.stdout.fnmatch_lines(["ERROR test_a.py::test_needs_it*"])
    assert "never reached" not in result.stdout.str()
    assert service_sections(result.stdout.str()) == []  # the message quotes the output
    # The logs are kept after the session, with the service's last words in them.
    log_line = next(line for line in result.outlines if "; log: " in line)
    log = Path(log_line.split("; log: ", 1)[1])
    assert "last words of chatty" in log.read_text()
    assert (log.parent / "quiet.py.log").exists()


def test_nothing_is_added_when_services_are_healthy(
    pytester: pytest.Pytester, services: None
) -> None:
    pytester.makepyfile(
        """
        import os, signal
        from conftest import say

        def test_passes(chatty):
            say(chatty, "healthy")

        def test_ends_its_own_service(watcher_getter, request, run_dir):
            from conftest import start
            proc, _ = start(watcher_getter, request, run_dir, "quiet")
            proc.terminate()
            proc.wait()
        """
    )
    result = pytester.runpytest_subprocess(*RUN, "-rA")
    result.assert_outcomes(passed=2)
    assert "Captured stdout of service" not in result.stdout.str()
    assert "services that died" not in result.stdout.str()


def test_sections_and_deaths_reach_the_xdist_controller(
    pytester: pytest.Pytester, services: None
) -> None:
    pytester.makepyfile(
        """
        import os, signal, time
        from conftest import say

        def test_fails(chatty):
            say(chatty, "said on a worker")
            assert False

        def test_kills(quiet):
            os.kill(quiet[0].pid, signal.SIGKILL)
            time.sleep(0.2)
        """
    )
    result = pytester.runpytest_subprocess("-n", "1")
    result.assert_outcomes(passed=1, failed=1)
    # Started during the setup of test_fails, so all that chatty said belongs to that test.
    assert service_sections(result.stdout.str()) == [
        ("chatty.py", "chatty.py starting\nsaid on a worker")
    ]
    result.stdout.fnmatch_lines(
        [
            "*= services that died before their teardown =*",
            "service 'quiet.py' (pid *) exited with code -9 (SIGKILL) by ??:??:??, during "
            "test_sections_and_deaths_reach_the_xdist_controller.py::test_kills; log: *.log",
        ]
    )


def test_a_line_count_that_is_not_plain_digits_is_a_usage_error(
    pytester: pytest.Pytester, services: None
) -> None:
    pytester.makepyfile("def test_nothing():\n    pass\n")
    for value in ("²", "٣", "-1", "2.5"):
        pytester.makeini(f"[pytest]\nservices_report_lines = {value}\n")
        result = pytester.runpytest_subprocess(*RUN)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, value
        assert "INTERNALERROR" not in result.stderr.str() + result.stdout.str()
        result.stderr.fnmatch_lines(
            [
                "*services_report_lines must be a whole number of lines written with the "
                f"digits 0-9, such as 20 (0 turns the service sections off), not '{value}'*"
            ]
        )


def test_junit_xml_names_the_service_of_each_section(
    pytester: pytest.Pytester, services: None
) -> None:
    pytester.makepyfile(
        """
        from conftest import say

        def test_fails(chatty, quiet):
            say(chatty, "chatty speaks")
            say(quiet, "quiet speaks")
            assert False
        """
    )
    result = pytester.runpytest_subprocess(
        *RUN, "--junitxml=out.xml", "-o", "junit_logging=system-out"
    )
    result.assert_outcomes(failed=1)
    tree = ET.parse(pytester.path / "out.xml")
    out = next(tree.iter("testcase")).findtext("system-out") or ""
    chatty = re.search(r"service 'chatty\.py' \(pid \d+\), log \S+chatty\.py\.log", out)
    quiet = re.search(r"service 'quiet\.py' \(pid \d+\), log \S+quiet\.py\.log", out)
    assert chatty and quiet, out
    assert chatty.start() < out.index("chatty speaks") < quiet.start() < out.index("quiet speaks")
    # The terminal's sections are named by their titles already: no header repeated there.
    assert service_sections(result.stdout.str().split("= FAILURES =")[1]) == [
        ("chatty.py", "chatty.py starting\nchatty speaks"),
        ("quiet.py", "quiet.py starting\nquiet speaks"),
    ]
