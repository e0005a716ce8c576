"""The Xvfb fixtures, run in real inner pytest sessions against Xvfb and a real X client."""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_services.folders import default_lock_dir, private_dir
from pytest_services.locks import X_LOCK, X_SOCKET, get_free_display, unlock_display
from pytest_services.process import start_service
from pytest_services.xvfb import X11Handshake, start_xvfb

needs_x = pytest.mark.skipif(
    not all(shutil.which(name) for name in ("Xvfb", "xauth", "xdpyinfo")),
    reason="needs Xvfb, xauth and xdpyinfo: apt-get install xvfb xauth x11-utils",
)

#: Helpers for the inner test files: run xdpyinfo, list this process's Xvfb children.
HELPERS = """
import os, re, subprocess

def xdpyinfo(*args, **env):
    return subprocess.run(
        ["xdpyinfo", *args], env=dict(os.environ, **env), capture_output=True, text=True
    )

def xvfb_children():
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                name, rest = stat.read().rsplit(")", 1)
        except OSError:
            continue
        if name.endswith("(Xvfb") and int(rest.split()[1]) == os.getpid():
            found.append(int(pid))
    return found
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*args)


@pytest.fixture(scope="module")
def running_xvfb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """An Xvfb at 640x480 started by hand, as a user's own X server: (display, Xauthority)."""
    folder = tmp_path_factory.mktemp("own-xvfb")
    lock_dir = private_dir(default_lock_dir())
    log = logging.getLogger("test_xvfb")
    display = get_free_display(lock_dir, log)
    xauthority = folder / "Xauthority"
    server = start_xvfb(
        display, (640, 480, 24), xauthority, functools.partial(start_service, log_dir=folder)
    )
    yield display, xauthority
    server.stop()
    unlock_display(display, lock_dir, log)


@pytest.fixture(scope="module")
def open_xvfb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """An Xvfb that lets anyone in (``-ac``), as CI images often start one: (display, unused)."""
    folder = tmp_path_factory.mktemp("open-xvfb")
    lock_dir = private_dir(default_lock_dir())
    log = logging.getLogger("test_xvfb")
    display = get_free_display(lock_dir, log)
    server = start_service(
        "Xvfb",
        [f":{display}", "-ac", "-nolisten", "tcp"],
        checker=X11Handshake(display, "00" * 16),  # any cookie will do
        log_dir=folder,
    )
    yield display, folder / "no-Xauthority"
    server.stop()
    unlock_display(display, lock_dir, log)


@needs_x
def test_clients_need_the_cookie_on_the_socket_and_on_tcp(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        HELPERS
        + """
def test_display(xvfb, xvfb_display, tmp_path):
    assert os.environ["DISPLAY"] == f":{xvfb_display}"
    xauthority = os.environ["XAUTHORITY"]
    assert os.stat(xauthority).st_mode & 0o777 == 0o600
    assert "-ac" not in xvfb.args and xauthority in xvfb.args
    empty = tmp_path / "no-cookie"
    empty.touch()
    for where in ([], ["-display", f"127.0.0.1:{xvfb_display}"]):
        info = xdpyinfo(*where)
        assert info.returncode == 0, info.stderr
        assert re.search(r"dimensions:\\s+1366x768 pixels", info.stdout)
        assert re.search(r"depth of root window:\\s+24 planes", info.stdout)
        denied = xdpyinfo(*where, XAUTHORITY=str(empty))
        assert denied.returncode != 0
        assert "Authorization required" in denied.stderr
"""
    )
    run(pytester, "--run-services").assert_outcomes(passed=1)


@needs_x
def test_resolution_and_depth_come_from_xvfb_resolution(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
import pytest

@pytest.fixture(scope="session")
def xvfb_resolution():
    return (800, 600, 24)
"""
    )
    pytester.makepyfile(
        HELPERS
        + """
def test_screen(xvfb):
    info = xdpyinfo()
    assert info.returncode == 0, info.stderr
    assert re.search(r"dimensions:\\s+800x600 pixels", info.stdout), info.stdout[:2000]
    assert re.search(r"depth of root window:\\s+24 planes", info.stdout)
"""
    )
    run(pytester, "--run-services").assert_outcomes(passed=1)


@needs_x
def test_tcp_is_closed_when_the_ini_says_so(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nxvfb_listen_tcp = false\n")
    pytester.makepyfile(
        HELPERS
        + """
def test_unix_socket_only(xvfb, xvfb_display):
    assert xvfb.args[-2:] == ["-nolisten", "tcp"]
    assert xdpyinfo().returncode == 0
    over_tcp = xdpyinfo("-display", f"127.0.0.1:{xvfb_display}")
    assert over_tcp.returncode != 0
    assert "Authorization required" not in over_tcp.stderr
"""
    )
    run(pytester, "--run-services").assert_outcomes(passed=1)


@needs_x
@pytest.mark.parametrize("source", ["cli", "ini"])
def test_xvfb_display_uses_a_running_server_and_starts_none(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    running_xvfb: tuple[int, Path],
    source: str,
) -> None:
    display, xauthority = running_xvfb
    monkeypatch.setenv("XAUTHORITY", str(xauthority))
    pytester.makepyfile(
        HELPERS
        + f"""
def test_existing_display(xvfb, xvfb_display):
    assert xvfb is None
    assert xvfb_display == {display}
    assert os.environ["DISPLAY"] == ":{display}"
    assert os.environ["XAUTHORITY"] == {str(xauthority)!r}
    assert xvfb_children() == []
    info = xdpyinfo()
    assert info.returncode == 0, info.stderr
    assert re.search(r"dimensions:\\s+640x480 pixels", info.stdout)
"""
    )
    if source == "cli":
        result = run(pytester, "--run-services", "--xvfb-display", f":{display}")
    else:
        pytester.makeini(f"[pytest]\nxvfb_display = :{display}\n")
        result = run(pytester)
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("source", ["cli", "ini"])
def test_a_bad_xvfb_display_is_a_usage_error(pytester: pytest.Pytester, source: str) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    if source == "cli":
        result = run(pytester, "--xvfb-display", "foo")
    else:
        pytester.makeini("[pytest]\nxvfb_display = foo\n")
        result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*Invalid X display 'foo'*':N'*"])


@needs_x
def test_each_xdist_worker_gets_its_own_display(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(
        HELPERS
        + f"""
import json, pathlib

def test_record(xvfb, xvfb_display, worker_id):
    info = xdpyinfo()
    assert info.returncode == 0, info.stderr
    record = {{"worker": worker_id, "display": os.environ["DISPLAY"], "pid": xvfb.pid}}
    pathlib.Path({str(tmp_path)!r}, worker_id).write_text(json.dumps(record))
"""
    )
    run(pytester, "-n", "2", "--dist", "each").assert_outcomes(passed=2)
    records = [json.loads(path.read_text()) for path in tmp_path.iterdir()]
    assert sorted(record["worker"] for record in records) == ["gw0", "gw1"]
    assert len({record["display"] for record in records}) == 2
    assert len({record["pid"] for record in records}) == 2


@needs_x
@pytest.mark.parametrize("display_before", [":4242", None])
def test_server_lock_socket_and_environment_are_gone_after_the_session(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    display_before: str | None,
) -> None:
    if display_before is None:
        monkeypatch.delenv("DISPLAY", raising=False)
    else:
        monkeypatch.setenv("DISPLAY", display_before)
    monkeypatch.setenv("XAUTHORITY", "/nonexistent/Xauthority")
    during, after = tmp_path / "during.json", tmp_path / "after.json"
    pytester.makeconftest(
        f"""
import json, os, pathlib

def pytest_unconfigure(config):
    environment = {{name: os.environ.get(name) for name in ("DISPLAY", "XAUTHORITY")}}
    pathlib.Path({str(after)!r}).write_text(json.dumps(environment))
"""
    )
    pytester.makepyfile(
        f"""
import json, os, pathlib

def test_record(xvfb, xvfb_display):
    assert os.path.exists("/tmp/.X%d-lock" % xvfb_display)
    record = {{"display": xvfb_display, "pid": xvfb.pid, "DISPLAY": os.environ["DISPLAY"]}}
    pathlib.Path({str(during)!r}).write_text(json.dumps(record))
"""
    )
    run(pytester, "--run-services").assert_outcomes(passed=1)
    record = json.loads(during.read_text())
    assert record["DISPLAY"] == f":{record['display']}" != display_before
    assert not os.path.exists(f"/proc/{record['pid']}")
    assert not os.path.lexists(X_LOCK.format(record["display"]))
    assert not os.path.lexists(X_SOCKET.format(record["display"]))
    assert json.loads(after.read_text()) == {
        "DISPLAY": display_before,
        "XAUTHORITY": "/nonexistent/Xauthority",
    }


def test_without_services_nothing_starts_and_display_is_untouched(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPLAY", ":4242")
    pytester.makepyfile(
        HELPERS
        + """
def test_nothing_runs(xvfb, xvfb_display):
    assert xvfb is None and xvfb_display is None
    assert os.environ["DISPLAY"] == ":4242"
    assert xvfb_children() == []
"""
    )
    run(pytester).assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("present", "message"),
    [
        ([], "*Xvfb is not installed*Debian package 'xvfb': apt-get install xvfb"),
        (["Xvfb"], "*xauth is not installed*Debian package 'xauth': apt-get install xauth"),
    ],
)
def test_a_missing_binary_names_its_package(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    present: list[str],
    message: str,
) -> None:
    for name in present:
        found = shutil.which(name)
        if found is None:
            pytest.skip(f"needs {name}: apt-get install xvfb")
        (tmp_path / name).symlink_to(found)
    monkeypatch.setenv("PATH", str(tmp_path))
    pytester.makepyfile("def test_display(xvfb): pass")
    result = run(pytester, "--run-services")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([message])


@needs_x
@pytest.mark.parametrize("foreign", ["running_xvfb", "open_xvfb"])
def test_a_display_held_by_a_foreign_server_is_reported_with_its_owner(
    pytester: pytest.Pytester, request: pytest.FixtureRequest, foreign: str
) -> None:
    display, _ = request.getfixturevalue(foreign)
    owner = Path(X_LOCK.format(display)).read_text().strip()
    pytester.makeconftest(
        f"""
import pytest

@pytest.fixture(scope="session")
def xvfb_display():
    return {display}
"""
    )
    pytester.makepyfile("def test_display(xvfb): pass")
    result = run(pytester, "--run-services")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*Service 'Xvfb' exited with code 1 before it was ready*",
            f"*command: */Xvfb :{display} -screen 0 1366x768x24 *",
            f"*Server is already active for display {display}*",
            f"*display :{display} belongs to another X server (pid {owner}, *",
        ]
    )


@pytest.mark.parametrize(
    ("resolution", "message"),
    [
        ('"800x600"', "give (width, height, depth) as positive whole numbers"),
        ("(800, 600, True)", "give (width, height, depth) as positive whole numbers"),
        ("(800, 0, 24)", "give (width, height, depth) as positive whole numbers"),
        ("(800, 600, 7)", "Xvfb cannot run a screen of depth 7; use one of 8, 15, 16, 24, 30"),
        ("(800, 600, 32)", "Xvfb cannot run a screen of depth 32; use one of 8, 15, 16, 24, 30"),
    ],
)
def test_a_bad_resolution_is_explained(
    pytester: pytest.Pytester, resolution: str, message: str
) -> None:
    pytester.makeconftest(
        f"""
import pytest

@pytest.fixture(scope="session")
def xvfb_resolution():
    return {resolution}
"""
    )
    pytester.makepyfile("def test_display(xvfb): pass")
    result = run(pytester, "--run-services")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*Invalid xvfb_resolution *: {message}*"])
    assert "Xvfb :" not in result.stdout.str()  # refused before Xvfb was started


@needs_x
@pytest.mark.parametrize("own_session", [False, True], ids=["same-group", "own-session"])
def test_a_display_taken_by_another_server_after_reservation_is_given_up(
    pytester: pytest.Pytester, own_session: bool
) -> None:
    # Another X server takes the first display handed out between its reservation and
    # Xvfb's start, as one started by hand or by another tool can.  It lets anyone in, so
    # it would accept the cookie; started in a session of its own it leads a process group,
    # as the plugin's Xvfb does, and is a child of the same pytest process.
    pytester.makeconftest(
        f"""
import os, subprocess, time
import pytest

@pytest.fixture(scope="session")
def display_getter(display_getter):
    taken = []

    def getter():
        display = display_getter()
        if not taken:
            server = subprocess.Popen(["Xvfb", f":{{display}}", "-nolisten", "tcp"],
                                      stderr=subprocess.DEVNULL,
                                      start_new_session={own_session})
            while not os.path.exists(f"/tmp/.X11-unix/X{{display}}"):
                time.sleep(0.01)
            taken.append((display, server))
        return display

    yield getter
    for _display, server in taken:
        server.terminate()
        server.wait()
    print(f"TAKEN={{taken[0][0]}}")
"""
    )
    pytester.makepyfile(
        """
import os, subprocess

def test_display(xvfb, xvfb_display):
    assert os.environ["DISPLAY"] == f":{xvfb_display}"
    print(f"USED={xvfb_display}")
    subprocess.run(["xdpyinfo"], check=True, stdout=subprocess.DEVNULL)
"""
    )
    result = run(pytester, "--run-services", "-s")
    result.assert_outcomes(passed=1)
    taken = int(next(line for line in result.outlines if "TAKEN=" in line).split("=")[1])
    used = int(next(line for line in result.outlines if "USED=" in line).split("USED=")[1])
    assert used != taken


@needs_x
def test_the_handshake_refuses_a_server_that_is_not_the_process_started(
    open_xvfb: tuple[int, Path],
) -> None:
    display, _ = open_xvfb
    owner = int(Path(X_LOCK.format(display)).read_text())
    check = X11Handshake(display, "00" * 16)
    assert not check()
    assert "no server process was attached" in repr(check)
    with subprocess.Popen(["sleep", "60"]) as stranger:
        try:
            check.attach(stranger)
            assert not check()
        finally:
            stranger.kill()
    assert f"answered by pid {owner}, not by the server started (pid {stranger.pid})" in repr(
        check
    )
